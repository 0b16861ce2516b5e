//! Tokenizer loading: `tokenizer.json` and `vocab.json` + `merges.txt` must tokenize every
//! fixture prompt identically and as diffusers does (SD1 and SD2 pad conventions, truncation).

mod fixture_common;

use fixture_common::fixtures;

use runai::pipeline::tokenizer::{from_vocab_merges, load_tokenizer_dir, prompt_ids};

struct Case {
    prompt: String,
    sd1: Vec<u32>,
    sd2: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("tokenizer/tokenizer_cases.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let list: Vec<Case> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            prompt: c["prompt"].as_str().unwrap().to_owned(),
            sd1: ids(&c["ids_sd1"]),
            sd2: ids(&c["ids_sd2"]),
        })
        .collect();
    assert!(list.len() >= 13);
    list
}

#[test]
fn tokenizer_json_matches_diffusers_ids() {
    let (sd1, pad1) = load_tokenizer_dir(&fixtures().join("models/tiny-sd1/tokenizer")).unwrap();
    let (sd2, pad2) = load_tokenizer_dir(&fixtures().join("models/tiny-sd2/tokenizer")).unwrap();
    assert_eq!(pad1, 49407);
    assert_eq!(pad2, 0);
    for c in cases() {
        assert_eq!(
            prompt_ids(&sd1, &c.prompt, pad1).unwrap(),
            c.sd1,
            "sd1 {:?}",
            c.prompt
        );
        assert_eq!(
            prompt_ids(&sd2, &c.prompt, pad2).unwrap(),
            c.sd2,
            "sd2 {:?}",
            c.prompt
        );
    }
}

#[test]
fn vocab_merges_tokenizer_equals_tokenizer_json() {
    let dir = fixtures().join("tokenizer");
    let from_json = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let sd1 = from_vocab_merges(
        &dir.join("vocab.json"),
        &dir.join("merges.txt"),
        "<|endoftext|>",
    )
    .unwrap();
    let sd2 = from_vocab_merges(&dir.join("vocab.json"), &dir.join("merges.txt"), "!").unwrap();
    for c in cases() {
        // Raw encodings (with the post-processor's special tokens) agree token for token.
        let a = from_json.encode(c.prompt.as_str(), true).unwrap();
        let b = sd1.encode(c.prompt.as_str(), true).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "{:?}", c.prompt);
        assert_eq!(a.get_tokens(), b.get_tokens(), "{:?}", c.prompt);
        assert_eq!(
            prompt_ids(&sd1, &c.prompt, 49407).unwrap(),
            c.sd1,
            "sd1 {:?}",
            c.prompt
        );
        assert_eq!(
            prompt_ids(&sd2, &c.prompt, 0).unwrap(),
            c.sd2,
            "sd2 {:?}",
            c.prompt
        );
    }
}

#[test]
fn folder_without_tokenizer_json_uses_vocab_and_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("models/tiny-sd2/tokenizer");
    for f in [
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let (tok, pad) = load_tokenizer_dir(tmp.path()).unwrap();
    assert_eq!(pad, 0);
    for c in cases() {
        assert_eq!(
            prompt_ids(&tok, &c.prompt, pad).unwrap(),
            c.sd2,
            "{:?}",
            c.prompt
        );
    }
}
