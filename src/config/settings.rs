//! Every server setting, declared once: config file key, type, built-in default, command-line
//! flag, `RUNAI_*` variable, `--help` line and the comment of `config/default.toml`. Adding a
//! setting is one entry here (its checks go in `Config::validate`); `runai config
//! --print-defaults` regenerates the shipped file and a test keeps the two equal.

use crate::config::declare::settings;
use crate::net::secret::Secret;

settings! {
    /// Address to listen on. 127.0.0.1 serves only this machine (Krita on the same computer). To
    /// serve a LAN use 0.0.0.0 together with allow, token and TLS below (see docs/security.md);
    /// binding beyond loopback without an allow-list logs a warning.
    host: String = "127.0.0.1".into(),
        flag "host", env "RUNAI_HOST", help "Address to listen on",
        cli .value_name("ADDR");

    /// TCP port; the Krita plugin connects to 50006.
    port: u16 = 50006,
        flag "port", env "RUNAI_PORT", help "TCP port";

    /// Idle auto-shutdown: exit when no client connected within startup_grace_secs, or when the
    /// last client left more than idle_secs ago. The plugin starts the server with --timeout.
    timeout: bool = false,
        flag "timeout", env "RUNAI_TIMEOUT",
        help "Exit when no client connects within the start-up grace, or the last client left \
              more than the idle time ago (the plugin's mode)";

    /// Fixed packet size of the wire protocol; the plugin uses 1024.
    packet_size: usize = 1024,
        flag "packet-size", env "RUNAI_PACKET_SIZE",
        help "Wire packet size in bytes (the plugin uses 1024)";

    /// Model roots, searched in order; "~" is the home directory.
    model_base_path: Vec<String> = vec!["~/stablediffusion".into()],
        flag "model-base-path", env "RUNAI_MODEL_BASE_PATH",
        help "Model root; repeat (or separate with ':') for more",
        cli .value_delimiter(':').value_name("DIR");

    /// LoRA folders, searched in order for <lora:NAME:MULT> and the loras request field.
    /// Empty: Lora/, lora/ and models/Lora/ under each model root.
    lora_path: Vec<String> = Vec::new(),
        flag "lora-path", env "RUNAI_LORA_PATH",
        help "LoRA folder; repeat (or separate with ':') for more",
        shown "Lora/, lora/, models/Lora/ under each model root",
        cli .value_delimiter(':').value_name("DIR");

    /// Textual-inversion embedding folders (A1111 .pt/.safetensors; the file name is the word
    /// to write in a prompt). Empty: embeddings/ under each model root.
    embeddings_path: Vec<String> = Vec::new(),
        flag "embeddings-path", env "RUNAI_EMBEDDINGS_PATH",
        help "Textual-inversion embeddings folder; repeat (or separate with ':') for more",
        shown "embeddings/ under each model root",
        cli .value_delimiter(':').value_name("DIR");

    /// Model used when a request names none (a folder relative to a root, or an absolute path
    /// inside one). Empty: requests must name a model.
    default_model: String = String::new(),
        flag "model", env "RUNAI_MODEL",
        help "Default model, used when a request names none (folder under a model root)",
        cli .value_name("MODEL");

    /// Simultaneous client connections; extra connections are refused at once.
    max_client_connections: usize = 16,
        flag "max-client-connections", env "RUNAI_MAX_CLIENT_CONNECTIONS",
        help "Maximum simultaneous clients; extra connections are refused at once";

    /// Jobs waiting for the GPU across all clients; a full queue answers "busy".
    queue_depth: usize = 32,
        flag "queue-depth", env "RUNAI_QUEUE_DEPTH",
        help "Jobs waiting for the GPU (all clients); a full queue answers busy";

    /// Jobs one client session may hold at once, waiting and running together.
    /// Beyond it that session gets "busy" while other sessions are still admitted, so one client
    /// cannot fill the queue.
    max_jobs_per_client: usize = 4,
        flag "max-jobs-per-client", env "RUNAI_MAX_JOBS_PER_CLIENT",
        help "Jobs one client may have waiting and running at once; more answer busy while \
              other clients are admitted";

    /// Largest accepted request message in bytes (64 MiB); larger ones get "too_large".
    max_message_bytes: usize = 64 * 1024 * 1024,
        flag "max-message-bytes", env "RUNAI_MAX_MESSAGE_BYTES",
        help "Largest request message in bytes; larger gets too_large and the connection closes";

    /// Seconds to wait for a first client when timeout is on.
    startup_grace_secs: f64 = 10.0,
        flag "startup-grace", env "RUNAI_STARTUP_GRACE",
        help "With --timeout: seconds to wait for the first client";

    /// Seconds after the last client left before exiting when timeout is on.
    idle_secs: f64 = 3.0,
        flag "idle", env "RUNAI_IDLE",
        help "With --timeout: seconds after the last client left before exiting";

    /// On SIGINT/SIGTERM: seconds the running job may take to finish before it is cancelled.
    drain_grace_secs: f64 = 30.0,
        flag "drain-grace", env "RUNAI_DRAIN_GRACE",
        help "On SIGINT/SIGTERM: seconds the running job may finish before it is cancelled";

    /// A client that stops in the middle of a message is dropped after this many seconds.
    read_timeout_secs: f64 = 60.0,
        flag "read-timeout", env "RUNAI_READ_TIMEOUT",
        help "Drop a client that stalls mid-message for this many seconds";

    /// A client that stops reading is dropped when one packet cannot be written in this time.
    write_timeout_secs: f64 = 60.0,
        flag "write-timeout", env "RUNAI_WRITE_TIMEOUT",
        help "Drop a client that does not read a packet for this many seconds";

    /// A session with no job queued or running and no message for this many seconds is closed
    /// (it receives a "closing" event first); 0 keeps idle sessions forever. The plugin reconnects.
    idle_timeout_secs: f64 = 300.0,
        flag "idle-timeout", env "RUNAI_IDLE_TIMEOUT",
        help "Close a client with no job and no message for this many seconds (closing first); \
              0 = never";

    /// Bytes of replies waiting for a slow client before it is dropped (256 MiB).
    max_outgoing_bytes: usize = 256 * 1024 * 1024,
        flag "max-outgoing-bytes", env "RUNAI_MAX_OUTGOING_BYTES",
        help "Reply bytes buffered for a slow client before it is dropped";

    /// Honour the quit packet from non-loopback clients.
    allow_remote_quit: bool = false,
        flag "allow-remote-quit", env "RUNAI_ALLOW_REMOTE_QUIT",
        help "Honour the quit packet from non-loopback clients";

    /// Shared secret: when set, a client's first message must be {"action": "auth", "token": "..."};
    /// anything else gets "unauthorized" and the connection is closed. Prefer the RUNAI_TOKEN
    /// variable over the command line (visible in the process list) or this file.
    token: Secret = Secret::default(),
        flag "token", env "RUNAI_TOKEN",
        help "Require this token as each client's first message, {\"action\": \"auth\", \
              \"token\": ...} (prefer the environment variable: flags show in the process list)",
        old_key "auth_token", shown "off",
        cli .alias("auth-token");

    /// Peers allowed to connect, as CIDRs or single addresses, e.g. ["192.168.1.0/24", "::1"].
    /// Others are closed before a byte is read or written. Empty: anyone who can reach the port.
    allow: Vec<String> = Vec::new(),
        flag "allow", env "RUNAI_ALLOW",
        help "Only these peers may connect (CIDRs or addresses, comma-separated, e.g. \
              192.168.1.0/24,::1); others are closed before a byte is exchanged",
        shown "anyone",
        cli .value_delimiter(',').value_name("CIDR,...");

    /// TLS: PEM certificate chain, with tls_key (both or neither). When set, every connection
    /// must speak TLS (the wire protocol inside is unchanged). Empty: plain TCP.
    tls_cert: String = String::new(),
        flag "tls-cert", env "RUNAI_TLS_CERT",
        help "Serve the same protocol inside TLS with this PEM certificate chain (needs --tls-key)",
        shown "off",
        cli .value_name("FILE");

    /// TLS: the PEM private key of tls_cert.
    tls_key: String = String::new(),
        flag "tls-key", env "RUNAI_TLS_KEY", help "PEM private key for --tls-cert",
        shown "off",
        cli .value_name("FILE");

    /// Request limit: most denoising steps per request.
    max_steps: usize = 150,
        flag "max-steps", env "RUNAI_MAX_STEPS",
        help "Most denoising steps a request may ask for";

    /// Request limit: largest output width x height in pixels (2048x2048).
    max_pixels: u64 = 2048 * 2048,
        flag "max-pixels", env "RUNAI_MAX_PIXELS",
        help "Largest output width x height in pixels (2048x2048)";

    /// Request limit: most images per request.
    max_samples: usize = 8,
        flag "max-samples", env "RUNAI_MAX_SAMPLES", help "Most images per request";

    /// Request limit: largest input image (pixels or mask) in pixels, checked from its header
    /// before decoding (4096x4096).
    max_input_pixels: u64 = 4096 * 4096,
        flag "max-input-pixels", env "RUNAI_MAX_INPUT_PIXELS",
        help "Largest input image (pixels/mask) in pixels, checked before decoding";

    /// Longest prompt and negative prompt in characters; longer ones get "invalid_field" at once.
    max_prompt_chars: usize = 20_000,
        flag "max-prompt-chars", env "RUNAI_MAX_PROMPT_CHARS",
        help "Longest prompt or negative prompt in characters; longer gets invalid_field";

    /// Restart budget of the worker and of the model registry: more than max_restarts crashes of
    /// either within restart_window_secs make it unavailable and the process exit non-zero (so
    /// systemd or Docker restarts it).
    max_restarts: u32 = 5,
        flag "max-restarts", env "RUNAI_MAX_RESTARTS",
        help "Worker or model-registry crashes tolerated within the restart window before \
              exiting non-zero";

    /// The restart budget's window in seconds (see max_restarts).
    restart_window_secs: f64 = 600.0,
        flag "restart-window", env "RUNAI_RESTART_WINDOW",
        help "Restart window in seconds";

    /// Continuous batching: up to max_batch jobs (of any users, same model and size) share each
    /// denoising step, joining and leaving at step boundaries; 1 runs one job at a time.
    max_batch: usize = 4,
        flag "max-batch", env "RUNAI_MAX_BATCH",
        help "Jobs (any users, same model and size) sharing one denoising step; 1 = one job at \
              a time";

    /// Estimated activation memory of one batched step in MiB: a batch never grows past it (a
    /// single job always runs). Jobs finishing together are decoded within the same bound.
    max_batch_mb: u64 = 8192,
        flag "max-batch-mb", env "RUNAI_MAX_BATCH_MB",
        help "Estimated activation memory of one batched step in MiB; a batch never grows past it",
        cli .value_name("MIB");

    /// Where models run: "cpu", "cuda" or "cuda:N" (CUDA needs a build with --features cuda).
    device: String = "cpu".into(),
        flag "device", env "RUNAI_DEVICE",
        help "Where models run: cpu, cuda or cuda:N (CUDA builds only)",
        cli .value_name("DEVICE");

    /// Weight precision: "auto" (f32 on CPU, f16 on CUDA), "f32", "f16", or "bf16" (CUDA only).
    /// The VAE always decodes in f32.
    dtype: String = "auto".into(),
        flag "dtype", env "RUNAI_DTYPE",
        help "Weight precision: auto (f32 on CPU, f16 on CUDA), f32, f16, bf16 (CUDA)",
        cli .value_name("DTYPE");

    /// CPU kernels: "auto" runs the AVX-512 copy on CPUs that have it (measured faster on Zen 4
    /// as well as expected on Zen 5) and AVX2 elsewhere; "avx512" or "avx2" force one (refused
    /// at start if this CPU cannot run it). Images agree to float tolerance.
    cpu_kernels: String = "auto".into(),
        flag "cpu-kernels", env "RUNAI_CPU_KERNELS",
        help "CPU kernels: auto (AVX-512 where the CPU has it, else AVX2), avx512, avx2",
        cli .value_name("ISA");

    /// Models kept in memory at once (least recently used is evicted first); switching back to
    /// a cached model does not reload it.
    max_loaded_models: usize = 2,
        flag "max-loaded-models", env "RUNAI_MAX_LOADED_MODELS",
        help "Models kept loaded at once";

    /// Memory budget for loaded models in MiB, estimated from their weights.
    model_cache_mb: u64 = 16384,
        flag "model-cache-mb", env "RUNAI_MODEL_CACHE_MB",
        help "Memory budget of loaded models in MiB";

    /// CompVis safety checker (NSFW filter) run on every image after decoding: "off" (default, no
    /// checker loaded), "black" (a flagged image becomes black), "blur" (a strong blur) or
    /// "report" (unchanged). Every mode but "off" adds "nsfw": true|false to each image message; a
    /// request's do_nsfw_filter: true turns "report" into "black" and never loosens the others.
    safety_checker: String = "off".into(),
        flag "safety-checker", env "RUNAI_SAFETY_CHECKER",
        help "CompVis safety checker: off, black, blur or report",
        cli .value_name("MODE");

    /// The checker's folder; "" = CompVis/stable-diffusion-safety-checker under a model root.
    /// An enabled checker with no folder stops start-up with an error.
    safety_checker_path: String = String::new(),
        flag "safety-checker-path", env "RUNAI_SAFETY_CHECKER_PATH",
        help "Safety checker folder (transformers layout)",
        shown "CompVis/stable-diffusion-safety-checker under a model root",
        cli .value_name("DIR");

    // HTTP front end (src/http/): these three settings belong together.
    /// HTTP front end: AUTOMATIC1111's /sdapi/v1 and OpenAI's /v1/images (Open WebUI,
    /// SillyTavern, LibreChat, webuiapi ...) on host:http_port, with the same models, queue,
    /// limits, allow-list, token and TLS certificate as the socket port. Not set: no HTTP server
    /// (7860 is the port A1111 clients expect; 0 = any free port). With a token, clients send
    /// "Authorization: Bearer <token>" or HTTP Basic with the token as password.
    http_port: Option<u16> = None,
        flag "http-port", env "RUNAI_HTTP_PORT",
        help "Serve the A1111 and OpenAI HTTP APIs on this port (7860 is the usual one)",
        shown "off";

    /// HTTP Basic user name required with the token (A1111's --api-auth user:token); "" = any
    /// user name. Each Basic user is its own lane of the fair queue. Needs token.
    http_user: String = String::new(),
        flag "http-user", env "RUNAI_HTTP_USER",
        help "HTTP Basic user name required with the token",
        shown "any",
        cli .value_name("USER");

    /// Browser origins allowed to call the HTTP API (CORS), e.g. ["https://chat.example.org"];
    /// "*" allows any. Empty: no CORS headers (server-side clients need none).
    cors_origin: Vec<String> = Vec::new(),
        flag "cors-origin", env "RUNAI_CORS_ORIGIN",
        help "Browser origins allowed to call the HTTP API (CORS), comma-separated; * = any",
        shown "none",
        cli .value_delimiter(',').value_name("ORIGIN,...");
}
