//! Tokenizer loading: `tokenizer.json` and `vocab.json` + `merges.txt` must tokenize every
//! fixture prompt identically and as diffusers does (SD1 and SD2 pad conventions, truncation),
//! and a prompt of any length costs a bounded window that changes no real prompt's ids.

mod fixture_common;

use fixture_common::fixtures;

use runai::pipeline::load::tokenizer::{
    from_vocab_merges, load_tokenizer_dir, prompt_ids, tokenize_window, MAX_LENGTH, WINDOW_CHARS,
};

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

/// Ids exactly as before the window existed: the whole prompt tokenized, then cut.
fn whole_prompt_ids(tok: &tokenizers::Tokenizer, prompt: &str, pad: u32) -> Vec<u32> {
    let body = tok.encode(prompt, false).unwrap().get_ids().to_vec();
    let mut ids = vec![49406];
    ids.extend(body.iter().take(MAX_LENGTH - 2));
    ids.push(49407);
    ids.resize(MAX_LENGTH, pad);
    ids
}

#[test]
fn the_window_keeps_every_real_prompts_ids() {
    let (tok, pad) = load_tokenizer_dir(&fixtures().join("models/tiny-sd1/tokenizer")).unwrap();
    let mut prompts: Vec<String> = cases().into_iter().map(|c| c.prompt).collect();
    let all = prompts.join(" ");
    // Long prompts in every shape: many short words, weighted A1111-style syntax, tabs and
    // newlines, runs of spaces, non-ASCII text, each well past 77 words and some past the
    // character window.
    prompts.push(all.repeat(40));
    prompts.push("(masterpiece:1.2), best quality, [[fox]], ".repeat(400));
    prompts.push("red\tfox\n\nin   the snow, ".repeat(2000));
    prompts.push("ein Fuchs im Schnee, 雪の中の狐, лиса ".repeat(1000));
    prompts.push(format!("{} tail", "word ".repeat(76)));
    prompts.push(format!("{} tail", "x".repeat(WINDOW_CHARS - 10)));
    for p in &prompts {
        assert_eq!(
            prompt_ids(&tok, p, pad).unwrap(),
            whole_prompt_ids(&tok, p, pad),
            "prompt of {} chars starting {:?}",
            p.chars().count(),
            p.chars().take(40).collect::<String>()
        );
    }
}

#[test]
fn the_window_is_bounded_whatever_the_prompt() {
    let huge_words = "a fox ".repeat(5_000_000);
    let one_word = "x".repeat(30_000_000);
    let spaces = format!("{}fox", " ".repeat(30_000_000));
    for p in [&huge_words, &one_word, &spaces] {
        let w = tokenize_window(p);
        assert!(w.chars().count() <= WINDOW_CHARS, "{}", w.len());
        assert!(p.starts_with(w));
    }
    // Enough words end the window long before the character bound.
    assert!(tokenize_window(&huge_words).len() < 1000);
    // A prompt of 30 million characters costs no more than the window.
    let (tok, pad) = load_tokenizer_dir(&fixtures().join("models/tiny-sd1/tokenizer")).unwrap();
    let t0 = std::time::Instant::now();
    for p in [&huge_words, &one_word, &spaces] {
        assert_eq!(prompt_ids(&tok, p, pad).unwrap().len(), MAX_LENGTH);
    }
    eprintln!(
        "three 30M-character prompts tokenized in {:?}",
        t0.elapsed()
    );
}
