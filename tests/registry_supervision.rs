//! The model registry is supervised: a panic in the resolver answers `unavailable`, the
//! registry is reset and keeps serving; past the restart budget it is marked down (the failing
//! request says so) and the server exits non-zero so systemd or Docker restart it.

mod server_common;

use std::time::Duration;

use runai::app::spawn_server;
use runai::registry::model::ResolvedModel;
use runai::registry::{ModelResolver, Registry, ResolveError};
use serde_json::{json, Value};
use server_common::*;

/// The real registry, except that the model `boom` makes it panic like a reader bug.
struct PanickyResolver(Registry);

impl ModelResolver for PanickyResolver {
    fn resolve(&mut self, requested: &str) -> Result<ResolvedModel, ResolveError> {
        assert_ne!(requested, "boom", "resolver asked to panic");
        ModelResolver::resolve(&mut self.0, requested)
    }

    fn list(&mut self) -> Vec<ResolvedModel> {
        ModelResolver::list(&mut self.0)
    }

    fn reset(&mut self) {
        ModelResolver::reset(&mut self.0)
    }
}

fn on_model(job_id: &str, model: &str) -> Value {
    let mut v = txt2img(job_id, "a cat", 2, 1, 64);
    v["options"]["txt2img_model"] = json!(model);
    v
}

fn start_panicky(max_restarts: u32, step_delay: Duration) -> runai::app::ServerThread {
    let mut config = test_config();
    config.max_restarts = max_restarts;
    let roots = config.model_roots();
    let resolver = PanickyResolver(Registry::new(&roots));
    spawn_server(config, fake_factory(step_delay), Box::new(resolver)).expect("starts")
}

#[test]
fn a_resolver_panic_is_contained_and_the_registry_keeps_serving() {
    let server = start_panicky(5, Duration::ZERO);
    let mut c = Client::connect(server.local_addr);
    for round in 0..3 {
        let job = format!("boom{round}");
        c.send(&on_model(&job, "boom"));
        let end = c.collect_job(&job).end.unwrap();
        assert_eq!(end["code"], json!("unavailable"), "{end}");
        assert!(
            end["message"].as_str().unwrap().contains("restarted"),
            "{end}"
        );
        let job = format!("fine{round}");
        c.send(&on_model(&job, "tiny-sd1"));
        assert_eq!(c.collect_job(&job).end_event(), "done");
        c.send(&json!({"action": "models"}));
        let models = c.recv().unwrap();
        assert_eq!(models["event"], json!("models"), "{models}");
        assert!(!models["models"].as_array().unwrap().is_empty());
        c.send(&json!({"action": "ping"}));
        assert_eq!(c.recv().unwrap()["event"], json!("pong"));
    }
    server.shutdown();
    assert_eq!(join_within(server, Duration::from_secs(10)), 0);
}

#[test]
fn past_its_restart_budget_the_registry_is_down_and_the_server_exits_non_zero() {
    let server = start_panicky(1, Duration::from_millis(50));
    // A long job keeps the drain waiting, so the connections stay open after the registry
    // gives up and `ping` can be asked.
    let mut busy = Client::connect(server.local_addr);
    busy.send(&txt2img("long", "a cat", 60, 1, 64));
    busy.recv_until(|m| m["action"] == json!(4));
    let mut c = Client::connect(server.local_addr);
    c.send(&on_model("b1", "boom"));
    assert!(c.collect_job("b1").end.unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("restarted"));
    c.send(&on_model("b2", "boom"));
    let end = c.collect_job("b2").end.unwrap();
    assert_eq!(end["code"], json!("unavailable"), "{end}");
    assert_eq!(end["message"], json!("model registry is down"), "{end}");
    for request in [json!({"action": "ping"}), json!({"action": "models"})] {
        c.send(&request);
        let reply = c.recv_until(|m| m["job_id"].is_null());
        assert_eq!(reply["event"], json!("error"), "{reply}");
        assert_eq!(reply["code"], json!("unavailable"), "{reply}");
        assert_eq!(reply["message"], json!("model registry is down"), "{reply}");
    }
    assert_eq!(busy.collect_job("long").end_event(), "done");
    assert_eq!(join_within(server, Duration::from_secs(40)), 1);
}
