//! The HTTP front end over loopback with the fake generator: requests shaped exactly like
//! Open WebUI's, SillyTavern's, the Photoshop plugin's and an OpenAI client's; the listing
//! endpoints; the token; and bad input (each with its status and JSON error, the server
//! serving on).

mod http_common;
mod server_common;

use std::time::Duration;

use http_common::*;
use runai::app::{spawn_server, ServerThread};
use runai::config::Config;
use runai::engine::{GenerateError, GenerateJob, Generator, Progress};
use runai::net::secret::Secret;
use runai::pipeline::params::GeneratedImage;
use runai::registry::addons::{AddOnRoots, WithAddOns};
use runai::registry::Registry;
use serde_json::{json, Value};
use server_common::{fake_factory, join_within, seed_colour, start_with, test_config};

fn http_config() -> Config {
    Config {
        http_port: Some(0),
        max_message_bytes: 256 * 1024,
        ..test_config()
    }
}

fn start_http(config: Config) -> (ServerThread, std::net::SocketAddr) {
    let server = start_with(config, Duration::ZERO);
    let addr = server.http_addr.expect("HTTP port is on");
    (server, addr)
}

fn png_b64(w: u32, h: u32, colour: [u8; 3]) -> String {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(colour));
    runai::protocol::responses::encode_png_base64(&img).unwrap()
}

/// Checks an A1111 image: the fake's colour for its seed, and the infotext in its
/// `parameters` chunk, read back through `/png-info`.
fn check_image(
    addr: std::net::SocketAddr,
    b64: &Value,
    seed: u64,
    infotext: &str,
    size: (u32, u32),
) {
    let png = png_bytes(b64);
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), size);
    assert_eq!(*img.get_pixel(0, 0), seed_colour(seed));
    let info = post_json(
        addr,
        "/sdapi/v1/png-info",
        &json!({"image": format!("data:image/png;base64,{}", b64.as_str().unwrap())}),
    );
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["info"], json!(infotext));
}

#[test]
fn open_webui_flow() {
    let (server, addr) = start_http(http_config());
    assert_eq!(get(addr, "/health").json()["status"], "ok");
    // Open WebUI sends `authorization: ""` (or an empty Basic) when no auth is configured.
    let options = request(
        addr,
        "GET",
        "/sdapi/v1/options",
        &[("authorization", "")],
        b"",
    );
    assert_eq!(options.status, 200);
    let mut options = options.json();
    assert_eq!(options["sd_model_checkpoint"], "tiny-sd1");
    for key in ["sd_vae", "CLIP_stop_at_last_layers", "samples_format"] {
        assert!(options.get(key).is_some(), "{key}");
    }
    let models = request(
        addr,
        "GET",
        "/sdapi/v1/sd-models",
        &[("authorization", "Basic ")],
        b"",
    )
    .json();
    let titles: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["title"].as_str())
        .collect();
    assert!(titles.contains(&"tiny-sd2"), "{titles:?}");
    for m in models.as_array().unwrap() {
        for key in [
            "title",
            "model_name",
            "hash",
            "sha256",
            "filename",
            "config",
        ] {
            assert!(m.get(key).is_some(), "{key} in {m}");
        }
    }
    // set_image_model: the whole dict back with the new checkpoint; answered null.
    options["sd_model_checkpoint"] = json!("tiny-sd2");
    let set = post_json_as(addr, "/sdapi/v1/options", "Basic ", &options);
    assert_eq!((set.status, set.json()), (200, Value::Null));
    let now = request(addr, "GET", "/sdapi/v1/options", &[], b"").json();
    assert_eq!(now["sd_model_checkpoint"], "tiny-sd2");
    // image_generations: prompt, batch_size, width, height, steps, negative_prompt.
    let body = json!({"prompt": "a lighthouse", "batch_size": 2, "width": 64, "height": 96,
                      "steps": 3, "negative_prompt": "fog"});
    let r = post_json_as(addr, "/sdapi/v1/txt2img", "Basic ", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let info = r.info();
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    assert_eq!(info["sd_model_name"], "tiny-sd2");
    assert_eq!(info["steps"], 3);
    assert_eq!(info["sampler_name"], "Euler a");
    assert_eq!(v["parameters"]["prompt"], "a lighthouse");
    assert_eq!(v["parameters"]["cfg_scale"], 7.0);
    let seeds: Vec<u64> = info["all_seeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(seeds[1], seeds[0] + 1);
    assert_eq!(info["seed"], json!(seeds[0]));
    let texts = info["infotexts"].as_array().unwrap();
    let first = texts[0].as_str().unwrap();
    assert!(first.starts_with("a lighthouse\nNegative prompt: fog\nSteps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, "), "{first}");
    assert!(
        first.contains(&format!("Seed: {}, Size: 64x96, Model: tiny-sd2", seeds[0])),
        "{first}"
    );
    for (i, img) in v["images"].as_array().unwrap().iter().enumerate() {
        check_image(addr, img, seeds[i], texts[i].as_str().unwrap(), (64, 96));
    }
    assert_eq!(info["job_timestamp"].as_str().unwrap().len(), 14);
    server.shutdown();
}

#[test]
fn sillytavern_and_webuiapi_shapes() {
    let (server, addr) = start_http(http_config());
    // SillyTavern's extension forwards its whole body, url and auth included.
    let body = json!({
        "url": "http://127.0.0.1:7860", "auth": "",
        "prompt": "a knight, masterpiece", "negative_prompt": "lowres",
        "sampler_name": "DPM++ 2M", "scheduler": "Karras", "steps": 4, "cfg_scale": 6.5,
        "width": 64, "height": 64, "restore_faces": false, "enable_hr": false,
        "hr_upscaler": "Latent", "hr_scale": 2, "hr_additional_modules": [],
        "denoising_strength": 0.7, "hr_second_pass_steps": 0, "seed": "1234",
        "override_settings": {"CLIP_stop_at_last_layers": 2, "sd_vae": "Automatic",
                              "forge_additional_modules": []},
        "override_settings_restore_afterwards": true, "clip_skip": 2,
        "save_images": true, "send_images": true, "do_not_save_grid": false,
        "do_not_save_samples": false,
    });
    let r = post_json(addr, "/sdapi/v1/txt2img", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let info = r.info();
    assert_eq!(info["seed"], 1234);
    assert_eq!(info["sampler_name"], "DPM++ 2M");
    assert_eq!(info["extra_generation_params"]["Schedule type"], "Karras");
    assert_eq!(info["clip_skip"], 2);
    assert_eq!(info["warnings"], json!([]));
    let text = info["infotexts"][0].as_str().unwrap();
    assert!(
        text.contains("Schedule type: Karras, CFG scale: 6.5, Seed: 1234")
            && text.contains("Clip skip: 2"),
        "{text}"
    );
    check_image(addr, &r.json()["images"][0], 1234, text, (64, 64));
    // webuiapi's txt2img: legacy sampler_index with a combined name, n_iter, seed -1.
    let body = json!({
        "enable_hr": false, "denoising_strength": 0.7, "firstphase_width": 0,
        "firstphase_height": 0, "hr_scale": 2, "hr_upscaler": "Latent", "prompt": "cute squirrel",
        "styles": [], "seed": -1, "subseed": -1, "subseed_strength": 0.0,
        "seed_resize_from_h": 0, "seed_resize_from_w": 0, "sampler_name": null,
        "sampler_index": "DPM++ 2M Karras", "batch_size": 1, "n_iter": 2, "steps": 2,
        "cfg_scale": 7.0, "width": 64, "height": 64, "restore_faces": false, "tiling": false,
        "do_not_save_samples": false, "do_not_save_grid": false, "negative_prompt": "",
        "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1,
        "override_settings": {}, "override_settings_restore_afterwards": true,
        "script_args": [], "script_name": null, "send_images": true, "save_images": false,
        "alwayson_scripts": {}
    });
    let r = post_json(addr, "/sdapi/v1/txt2img", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let info = r.info();
    assert_eq!(r.json()["images"].as_array().unwrap().len(), 2);
    assert_eq!(info["extra_generation_params"]["Schedule type"], "Karras");
    // send_images false: no images, still the info.
    let r = post_json(
        addr,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "x", "steps": 1, "width": 64, "height": 64, "send_images": false}),
    );
    assert_eq!((r.status, r.json()["images"].clone()), (200, json!([])));
    server.shutdown();
}

#[test]
fn photoshop_plugin_inpaint_and_img2img() {
    let (server, addr) = start_http(http_config());
    let mask = {
        let m =
            image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 255 } else { 0 }]));
        let mut png = Vec::new();
        m.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png)
    };
    let body = json!({
        "prompt": "a red door", "negative_prompt": "", "steps": 10, "cfg_scale": 7,
        "sampler_index": "Euler a", "seed": 77, "width": 64, "height": 64, "batch_size": 1,
        "n_iter": 1, "init_images": [format!("data:image/png;base64,{}", png_b64(80, 80, [200, 10, 10]))],
        "mask": mask, "denoising_strength": 0.5, "inpainting_fill": 1, "inpaint_full_res": false,
        "inpaint_full_res_padding": 32, "inpainting_mask_invert": 0, "mask_blur": 4,
        "resize_mode": 0, "restore_faces": false, "use_prompt_embedding": false,
        "alwayson_scripts": {"controlnet": {"args": []}}
    });
    let r = post_json(addr, "/sdapi/v1/img2img", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let info = r.info();
    assert_eq!(info["is_using_inpainting_conditioning"], true);
    assert_eq!(info["denoising_strength"], 0.5);
    assert!(info["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Denoising strength: 0.5"));
    assert_eq!(r.json()["parameters"]["init_images"], Value::Null);
    check_image(
        addr,
        &r.json()["images"][0],
        77,
        info["infotexts"][0].as_str().unwrap(),
        (64, 64),
    );
    // Plain img2img, bare base64, no size: the fake ran strength x steps steps.
    let r = post_json(
        addr,
        "/sdapi/v1/img2img",
        &json!({"init_images": [png_b64(64, 64, [1, 2, 3])], "prompt": "p", "steps": 4, "seed": 5, "width": 64, "height": 64}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.info()["is_using_inpainting_conditioning"], false);
    server.shutdown();
}

#[test]
fn openai_generations_and_edits() {
    let (server, addr) = start_http(http_config());
    let r = post_json(
        addr,
        "/v1/images/generations",
        &json!({
        "model": "dall-e-3", "prompt": "a teapot", "n": 2, "size": "64x64",
        "response_format": "b64_json", "quality": "standard", "user": "u1"}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let img = image::load_from_memory(&png_bytes(&data[0]["b64_json"])).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    // A runai model by name.
    let r = post_json(
        addr,
        "/v1/images/generations",
        &json!({"model": "tiny-sd2", "prompt": "x", "size": "64x64"}),
    );
    assert_eq!(r.status, 200);
    // `url` is refused in OpenAI's error shape.
    let r = post_json(
        addr,
        "/v1/images/generations",
        &json!({"prompt": "x", "response_format": "url"}),
    );
    assert_eq!(r.status, 422);
    let e = r.json();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("b64_json"),
        "{e}"
    );
    assert_eq!(e["error"]["type"], "invalid_request_error");
    // A path outside the roots is not silently ignored.
    let r = post_json(
        addr,
        "/v1/images/generations",
        &json!({"prompt": "x", "model": "/etc"}),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "forbidden_path");
    // Edits: multipart image + mask with transparent pixels where to paint.
    let image = png_bytes(&json!(png_b64(64, 64, [9, 9, 9])));
    let mask = {
        let mut m = image::RgbaImage::from_pixel(64, 64, image::Rgba([0, 0, 0, 255]));
        m.put_pixel(3, 3, image::Rgba([0, 0, 0, 0]));
        let mut png = Vec::new();
        m.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png
    };
    let mut form = Vec::new();
    let field = |form: &mut Vec<u8>, name: &str, file: Option<&str>, data: &[u8]| {
        form.extend_from_slice(b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"");
        form.extend_from_slice(name.as_bytes());
        form.extend_from_slice(b"\"");
        if let Some(f) = file {
            form.extend_from_slice(
                format!("; filename=\"{f}\"\r\nContent-Type: image/png").as_bytes(),
            );
        }
        form.extend_from_slice(b"\r\n\r\n");
        form.extend_from_slice(data);
        form.extend_from_slice(b"\r\n");
    };
    field(&mut form, "prompt", None, b"a green apple");
    field(&mut form, "n", None, b"1");
    field(&mut form, "model", None, b"gpt-image-1");
    field(&mut form, "image", Some("in.png"), &image);
    field(&mut form, "mask", Some("mask.png"), &mask);
    form.extend_from_slice(b"--BOUNDARY--\r\n");
    let r = request(
        addr,
        "POST",
        "/v1/images/edits",
        &[("Content-Type", "multipart/form-data; boundary=BOUNDARY")],
        &form,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 1);
    let r = request(
        addr,
        "POST",
        "/v1/images/edits",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("multipart"));
    server.shutdown();
}

#[test]
fn listings_are_honest() {
    let ext = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ext");
    let config = Config {
        lora_path: vec![ext.join("lora").display().to_string()],
        embeddings_path: vec![ext.join("embeddings").display().to_string()],
        ..http_config()
    };
    // The binary's resolver: the registry that also lists the add-on folders.
    let roots = AddOnRoots::with_defaults(
        config.lora_roots(),
        config.embeddings_roots(),
        &config.model_roots(),
    );
    let resolver = WithAddOns {
        inner: Registry::new(&config.model_roots()),
        roots,
    };
    let server = spawn_server(config, fake_factory(Duration::ZERO), Box::new(resolver)).unwrap();
    let addr = server.http_addr.expect("HTTP port is on");
    let samplers = get(addr, "/sdapi/v1/samplers").json();
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for n in [
        "Euler a", "Euler", "DPM++ 2M", "DDIM", "PLMS", "LMS", "Heun", "UniPC", "DDPM",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let schedulers = get(addr, "/sdapi/v1/schedulers").json();
    assert_eq!(schedulers[1]["label"], "Karras");
    for path in ["upscalers", "latent-upscale-modes", "sd-vae"] {
        let r = get(addr, &format!("/sdapi/v1/{path}"));
        assert_eq!((r.status, r.json()), (200, json!([])), "{path}");
    }
    // The fixture roots hold four LoRAs and two embeddings (SD1 and SDXL ones), listed by
    // the names prompts use.
    let loras = get(addr, "/sdapi/v1/loras").json();
    let mut names: Vec<&str> = loras
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["fox_style", "ink_style", "xl_lineart", "xl_soft"],
        "{loras}"
    );
    assert_eq!(loras[0]["alias"], loras[0]["name"]);
    let embeddings = get(addr, "/sdapi/v1/embeddings").json();
    let loaded = embeddings["loaded"].as_object().unwrap();
    assert_eq!(
        loaded.keys().collect::<Vec<_>>(),
        ["fxq-style", "fxq-xl"],
        "{embeddings}"
    );
    assert_eq!(embeddings["skipped"], json!({}));
    assert_eq!(get(addr, "/sdapi/v1/scripts").json()["txt2img"], json!([]));
    assert_eq!(get(addr, "/sdapi/v1/cmd-flags").json()["api"], true);
    let mem = get(addr, "/sdapi/v1/memory").json();
    assert!(mem["ram"]["total"].as_u64().unwrap() > 0, "{mem}");
    let refresh = request(addr, "POST", "/sdapi/v1/refresh-checkpoints", &[], b"");
    assert_eq!(refresh.status, 200);
    let missing = get(addr, "/sdapi/v1/no-such-thing");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["detail"]
        .as_str()
        .unwrap()
        .contains("no-such-thing"));
    server.shutdown();
}

#[test]
fn token_bearer_and_basic() {
    let config = Config {
        token: Secret::new("s3cret"),
        http_user: "team".into(),
        ..http_config()
    };
    let (server, addr) = start_http(config);
    let body = json!({"prompt": "x", "steps": 1, "width": 64, "height": 64});
    let r = post_json(addr, "/sdapi/v1/txt2img", &body);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(r.json()["error"], "unauthorized");
    let cases = [
        ("Basic ".to_string(), 401),
        ("Bearer nope".to_string(), 401),
        (basic("other", "s3cret"), 401),
        ("Bearer s3cret".to_string(), 200),
        (basic("team", "s3cret"), 200),
    ];
    for (auth, status) in cases {
        let r = post_json_as(addr, "/sdapi/v1/txt2img", &auth, &body);
        assert_eq!(r.status, status, "{auth}");
    }
    // Health needs no credentials (load balancers, Docker).
    assert_eq!(get(addr, "/health").status, 200);
    server.shutdown();
}

#[test]
fn allow_list_refuses_other_peers() {
    let config = Config {
        allow: vec!["10.9.9.9".into()],
        ..http_config()
    };
    let (server, addr) = start_http(config);
    let r = get(addr, "/sdapi/v1/options");
    assert_eq!(r.status, 403);
    assert!(r.json()["detail"].as_str().unwrap().contains("allow-list"));
    server.shutdown();
}

#[test]
fn bad_input_gets_a_status_and_a_json_error() {
    let (server, addr) = start_http(http_config());
    let post_raw = |body: &[u8]| {
        request(
            addr,
            "POST",
            "/sdapi/v1/txt2img",
            &[("Content-Type", "application/json")],
            body,
        )
    };
    let cases: Vec<(Reply, u16, &str)> = vec![
        (post_raw(b"{\"prompt\": \"x\", "), 400, "not valid JSON"),
        (post_raw(b"[1, 2]"), 400, "JSON object"),
        (
            post_json(addr, "/sdapi/v1/txt2img", &json!({"prompt": ["a"]})),
            422,
            "prompt",
        ),
        (
            post_json(addr, "/sdapi/v1/txt2img", &json!({"steps": "many"})),
            422,
            "steps",
        ),
        (
            post_json(addr, "/sdapi/v1/txt2img", &json!({"steps": 100000})),
            422,
            "steps",
        ),
        (
            post_json(addr, "/sdapi/v1/txt2img", &json!({"cfg_scale": -3})),
            422,
            "cfg_scale",
        ),
        (
            post_json(
                addr,
                "/sdapi/v1/txt2img",
                &json!({"width": 4096, "height": 4096}),
            ),
            422,
            "width",
        ),
        (
            post_json(
                addr,
                "/sdapi/v1/txt2img",
                &json!({"batch_size": 5, "n_iter": 2}),
            ),
            422,
            "batch_size",
        ),
        (
            post_json(
                addr,
                "/sdapi/v1/img2img",
                &json!({"init_images": ["!!!not base64!!!"]}),
            ),
            400,
            "init_images",
        ),
        (
            post_json(
                addr,
                "/sdapi/v1/img2img",
                &json!({"init_images": ["aGVsbG8="]}),
            ),
            400,
            "not a PNG",
        ),
        (
            post_json(
                addr,
                "/sdapi/v1/txt2img",
                &json!({"override_settings": {"sd_model_checkpoint": "/etc"}}),
            ),
            403,
            "root",
        ),
        (
            post_json(
                addr,
                "/sdapi/v1/txt2img",
                &json!({"override_settings": {"sd_model_checkpoint": "no-such-model"}}),
            ),
            404,
            "no-such-model",
        ),
        (
            post_json(
                addr,
                "/sdapi/v1/options",
                &json!({"sd_model_checkpoint": "../../etc/passwd"}),
            ),
            403,
            "",
        ),
        (
            post_json(addr, "/sdapi/v1/png-info", &json!({"image": "aGVsbG8="})),
            400,
            "not a PNG",
        ),
    ];
    for (r, status, needle) in cases {
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert_eq!(r.status, status, "{body}");
        let v = r.json();
        assert!(v["error"].is_string() && v["detail"].is_string(), "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains(needle),
            "{needle} in {v}"
        );
    }
    // Oversize: 413 from Content-Length, before the body is read.
    let mut s = connect(addr);
    use std::io::Write;
    s.write_all(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{\"prompt\": \"").unwrap();
    let r = read_reply(&mut s);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "too_large");
    // Unknown sampler: served with the default and a warning, as A1111 clients expect.
    let r = post_json(
        addr,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "x", "sampler_name": "Bogus 9000", "steps": 1, "width": 64, "height": 64}),
    );
    assert_eq!(r.status, 200);
    let info = r.info();
    assert_eq!(info["sampler_name"], "Euler a");
    assert!(info["warnings"][0].as_str().unwrap().contains("Bogus 9000"));
    // Still serving.
    assert_eq!(get(addr, "/health").status, 200);
    server.shutdown();
}

/// The fake generator with a safety checker's verdict: even seeds are flagged.
struct Flagging(Box<dyn Generator>);

impl Generator for Flagging {
    fn generate(
        &mut self,
        job: &GenerateJob,
        progress: &mut dyn Progress,
    ) -> Result<Vec<GeneratedImage>, GenerateError> {
        let mut images = self.0.generate(job, progress)?;
        for i in &mut images {
            i.nsfw = Some(i.seed % 2 == 0);
        }
        Ok(images)
    }
    fn loaded_models(&self) -> Vec<String> {
        self.0.loaded_models()
    }
    fn device(&self) -> String {
        self.0.device()
    }
}

#[test]
fn safety_verdicts_are_in_info() {
    let config = http_config();
    let roots = config.model_roots();
    let fake = fake_factory(Duration::ZERO);
    let factory: runai::engine::GeneratorFactory =
        std::sync::Arc::new(move || Ok(Box::new(Flagging(fake()?)) as Box<dyn Generator>));
    let server = spawn_server(config, factory, Box::new(Registry::new(&roots))).unwrap();
    let addr = server.http_addr.unwrap();
    let r = post_json(
        addr,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "x", "seed": 4, "batch_size": 2, "steps": 1, "width": 64, "height": 64}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.info()["nsfw"], json!([true, false]));
    // Without a checker there is no verdict at all.
    server.shutdown();
    let (plain, addr) = start_http(http_config());
    let r = post_json(
        addr,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "x", "steps": 1, "width": 64, "height": 64}),
    );
    assert!(r.info().get("nsfw").is_none());
    plain.shutdown();
}

#[test]
fn a_drain_closes_the_http_port_and_the_server_exits() {
    let (server, addr) = start_http(http_config());
    assert_eq!(get(addr, "/health").status, 200);
    server.shutdown();
    assert_eq!(join_within(server, Duration::from_secs(15)), 0);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "HTTP port still open after the drain"
    );
}

#[test]
fn cors_only_when_configured() {
    let config = Config {
        cors_origin: vec!["https://chat.example".into()],
        token: Secret::new("s3cret"),
        ..http_config()
    };
    let (server, addr) = start_http(config);
    // A browser's preflight carries no credentials and is answered before the token check.
    let pre = request(
        addr,
        "OPTIONS",
        "/sdapi/v1/txt2img",
        &[
            ("Origin", "https://chat.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        b"",
    );
    assert_eq!(pre.status, 200);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://chat.example")
    );
    let r = request(
        addr,
        "GET",
        "/sdapi/v1/options",
        &[
            ("Origin", "https://chat.example"),
            ("Authorization", "Bearer s3cret"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://chat.example")
    );
    // A refusal carries the header too, so the page can read it.
    let r = request(
        addr,
        "GET",
        "/sdapi/v1/options",
        &[("Origin", "https://chat.example")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert!(r.header("access-control-allow-origin").is_some());
    server.shutdown();
    let (plain, addr) = start_http(http_config());
    let r = request(
        addr,
        "GET",
        "/sdapi/v1/options",
        &[("Origin", "https://chat.example")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    plain.shutdown();
}
