//! LoRAs, A1111 prompt syntax and their bad inputs over the legacy socket, on the real
//! generator with tiny-sd1 and the fixture LoRAs: `<lora:...>` changes the image, the next
//! request without it is byte-identical to one made before any LoRA was used, and an
//! unknown LoRA, a corrupt file, a LoRA of another family, a name climbing out of its folder
//! and an unbalanced `((` prompt each get a clear error (or A1111's tolerant result) from a
//! worker that keeps serving. The same for tiny SDXL: weights and an SGM-named LoRA change
//! its image, and the base model stays untouched.

mod e2e_common;
mod fixture_common;
mod server_common;

use e2e_common::*;
use fixture_common::sdxl_root;
use runai::app::spawn_server;
use runai::engine::factory::sd_factory;
use runai::registry::addons::{AddOnRoots, WithAddOns};
use runai::registry::Registry;
use serde_json::json;
use server_common::{model_names, test_config, Client};

fn prompt_request(id: &str, prompt: &str) -> serde_json::Value {
    let mut req = txt2img(id, "tiny-sd1", 3, 77, 64, 64);
    req["options"]["txt2img_prompt"] = json!(prompt);
    req
}

#[test]
fn lora_changes_the_image_and_leaves_the_base_model_untouched() {
    let lora_dir = tempfile::tempdir().unwrap();
    for f in ["fox_style", "ink_style"] {
        std::fs::copy(
            fixtures().join(format!("ext/lora/{f}.safetensors")),
            lora_dir.path().join(format!("{f}.safetensors")),
        )
        .unwrap();
    }
    std::fs::write(
        lora_dir.path().join("broken.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    // A LoRA whose keys name layers tiny-sd1 does not have (another family).
    let other =
        candle_core::Tensor::zeros((4, 8), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    let mut tensors = std::collections::HashMap::new();
    tensors.insert(
        "lora_unet_input_blocks_9_1_proj_in.lora_down.weight".to_string(),
        other.clone(),
    );
    tensors.insert(
        "lora_unet_input_blocks_9_1_proj_in.lora_up.weight".to_string(),
        candle_core::Tensor::zeros((8, 4), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
    );
    candle_core::safetensors::save(&tensors, lora_dir.path().join("xl_only.safetensors")).unwrap();

    let emb_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("ext/embeddings/fxq-style.safetensors"),
        emb_dir.path().join("fxq-style.safetensors"),
    )
    .unwrap();
    let roots = AddOnRoots {
        lora: vec![lora_dir.path().to_path_buf()],
        embeddings: vec![emb_dir.path().to_path_buf()],
    };
    let factory = sd_factory(Default::default(), 3, 4 << 30, roots.clone());
    let resolver = WithAddOns {
        inner: Registry::new(&[fixtures().join("models")]),
        roots,
    };
    let server = spawn_server(test_config(), factory, Box::new(resolver)).unwrap();
    let mut c = Client::connect(server.local_addr);

    // `models` lists the LoRAs and the embedding by the names a prompt uses.
    c.send(&json!({"action": "models"}));
    let listing = c.recv_until(|v| v["event"] == "models");
    let names = |key: &str| -> Vec<String> {
        listing[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names("loras"),
        ["broken", "fox_style", "ink_style", "xl_only"]
    );
    assert_eq!(names("embeddings"), ["fxq-style"]);
    assert!(model_names(&listing).contains(&"tiny-sd1"));

    // The embedding's name changes the image; without it the prompt is the plain one.
    c.send(&prompt_request("emb", "a red fox fxq-style in the snow"));
    let emb = c.collect_job("emb");
    assert_done(&emb, 1, 3);
    c.send(&prompt_request("noemb", "a red fox fxq in the snow"));
    assert_ne!(image_b64(&c.collect_job("noemb"), 0), image_b64(&emb, 0));

    c.send(&prompt_request("plain1", "a red fox in the snow"));
    let plain = c.collect_job("plain1");
    assert_done(&plain, 1, 3);

    c.send(&prompt_request(
        "lora",
        "a red fox in the snow <lora:fox_style:1>",
    ));
    let lora = c.collect_job("lora");
    assert_done(&lora, 1, 3);
    assert_ne!(
        image_b64(&lora, 0),
        image_b64(&plain, 0),
        "the LoRA changed nothing"
    );

    c.send(&prompt_request(
        "two",
        "a red fox in the snow <lora:fox_style:0.6> <lora:ink_style:0.8>",
    ));
    let two = c.collect_job("two");
    assert_done(&two, 1, 3);
    assert_ne!(image_b64(&two, 0), image_b64(&lora, 0));

    // The same LoRA through the request field gives the tag's image.
    let mut field = prompt_request("field", "a red fox in the snow ");
    field["options"]["txt2img_loras"] = json!(["fox_style:1"]);
    c.send(&field);
    assert_eq!(image_b64(&c.collect_job("field"), 0), image_b64(&lora, 0));

    c.send(&prompt_request("plain2", "a red fox in the snow"));
    let again = c.collect_job("plain2");
    assert_eq!(
        image_b64(&again, 0),
        image_b64(&plain, 0),
        "base model changed"
    );

    for (id, prompt, needle) in [
        ("unknown", "fox <lora:nope:1>", "unknown LoRA"),
        ("corrupt", "fox <lora:broken:1>", "broken"),
        ("family", "fox <lora:xl_only:1>", "matches no layer"),
        (
            "climb",
            "fox <lora:../../etc/passwd:1>",
            "inside a LoRA folder",
        ),
        ("mult", "fox <lora:fox_style:abc>", "multiplier"),
    ] {
        c.send(&prompt_request(id, prompt));
        let r = c.collect_job(id);
        assert_eq!(r.end_event(), "error", "{id}: {:?}", r.end);
        let msg = r.end.as_ref().unwrap().to_string();
        assert!(msg.contains(needle), "{id}: {msg}");
    }

    // A1111 tolerates unbalanced brackets; the worker is alive and the base model unchanged.
    c.send(&prompt_request("unbalanced", "((a red fox [in the snow"));
    assert_done(&c.collect_job("unbalanced"), 1, 3);
    c.send(&prompt_request("plain3", "a red fox in the snow"));
    assert_eq!(image_b64(&c.collect_job("plain3"), 0), image_b64(&plain, 0));

    // Literal syntax keeps today's behaviour: the tag is text, no LoRA is applied.
    let mut literal = prompt_request("literal", "a red fox in the snow <lora:nope:1>");
    literal["options"]["txt2img_prompt_syntax"] = json!("literal");
    c.send(&literal);
    assert_done(&c.collect_job("literal"), 1, 3);
    server.shutdown();
}

/// SDXL over the legacy socket: A1111's weights are read (`(fox:1)` is the plain prompt,
/// `(fox:1.3)` is not), `<lora:xl_lineart:0.8>` changes the image, and the request after it
/// without the tag is byte-identical to the one before.
#[test]
fn sdxl_weights_and_lora_over_the_wire() {
    let lora_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("ext/lora/xl_lineart.safetensors"),
        lora_dir.path().join("xl_lineart.safetensors"),
    )
    .unwrap();
    let roots = AddOnRoots {
        lora: vec![lora_dir.path().to_path_buf()],
        embeddings: Vec::new(),
    };
    let models = sdxl_root();
    let factory = sd_factory(Default::default(), 3, 4 << 30, roots.clone());
    let resolver = WithAddOns {
        inner: Registry::new(&[models.path().to_path_buf()]),
        roots,
    };
    let server = spawn_server(test_config(), factory, Box::new(resolver)).unwrap();
    let mut c = Client::connect(server.local_addr);
    let mut run = |id: &str, prompt: &str| -> String {
        let mut req = txt2img(id, "xl/tiny-sdxl", 3, 77, 64, 64);
        req["options"]["txt2img_prompt"] = json!(prompt);
        c.send(&req);
        let r = c.collect_job(id);
        assert_done(&r, 1, 3);
        image_b64(&r, 0)
    };

    let plain = run("plain", "a red fox in the snow");
    assert_eq!(
        run("weight1", "a red (fox:1) in the snow"),
        plain,
        "a weight of 1 is the plain prompt"
    );
    let before = run("before", "a red (fox:1.3) in the snow");
    assert_ne!(before, plain, "the weight changed nothing");
    let lora = run("lora", "a red (fox:1.3) in the snow <lora:xl_lineart:0.8>");
    assert_ne!(lora, before, "the LoRA changed nothing");
    assert_eq!(
        run("after", "a red (fox:1.3) in the snow"),
        before,
        "base model changed"
    );
    server.shutdown();
}
