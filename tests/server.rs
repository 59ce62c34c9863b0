//! `promfed serve` end to end: the real server on 127.0.0.1 over real TLS, fed
//! AdmissionReview v1 fixtures shaped like kube-apiserver's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::server::{self as support, BOUND, Opts, TestServer, metric, wait_for};

use json_patch::Patch;
use promfed::config::Values;
use promfed::server::AppState;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const CREATE: &str = include_str!("fixtures/admission/configmap-create.json");
const UPDATE: &str = include_str!("fixtures/admission/configmap-update.json");
const DELETE: &str = include_str!("fixtures/admission/configmap-delete.json");
const SECRET: &str = include_str!("fixtures/admission/secret-create.json");
const VALUES: &str = include_str!("fixtures/admission/values.yaml");

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The decoded JSON patch of a response: `patch` is base64 of the JSON patch, as kube-apiserver expects.
fn response_patch(resp: &Value) -> Option<Patch> {
    use base64::Engine as _;
    let encoded = resp["response"]
        .get("patch")?
        .as_str()
        .expect("patch is a base64 string");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("valid base64");
    Some(serde_json::from_slice(&raw).unwrap())
}

/// What the engine makes of the review's object, applied: the expected result of the webhook.
fn engine_result(review: &Value, values: &Values) -> Value {
    let object = &review["request"]["object"];
    let m = promfed::rewrite::mutate_object(object, values).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &m.patch).unwrap();
    out
}

fn apply(review: &Value, patch: &Patch) -> Value {
    let mut out = review["request"]["object"].clone();
    json_patch::patch(&mut out, patch).unwrap();
    out
}

/// Every scrape config of the patched prometheus.yml labels its targets with the local
/// cluster name, and the federation job from the values is there.
fn assert_federated(object: &Value, local: &str) {
    let text = object["data"]["prometheus.yml"].as_str().unwrap();
    let cfg: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    let scrapes = cfg["scrape_configs"].as_sequence().unwrap();
    let mut federation = false;
    for sc in scrapes {
        let job = sc["job_name"].as_str().unwrap();
        if job == "federation" {
            federation = true;
            continue;
        }
        let relabels = sc["relabel_configs"]
            .as_sequence()
            .unwrap_or_else(|| panic!("job {job}: no relabel_configs"));
        assert!(
            relabels
                .iter()
                .any(|r| r["target_label"].as_str() == Some("cluster")
                    && r["replacement"].as_str() == Some(local)),
            "job {job}: no relabel rule with target_label: cluster, replacement: {local}"
        );
    }
    assert!(federation, "federation scrape config missing");
}

fn values() -> Values {
    Values::from_yaml_str(VALUES).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_patched_like_the_engine() {
    let s = TestServer::start(Opts::default()).await;
    let review = fixture(CREATE);
    let (status, resp) = s.post(bytes(&review)).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(resp["response"]["uid"], review["request"]["uid"]);
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(resp["response"]["patchType"], "JSONPatch");
    let patch = response_patch(&resp).expect("a patch");
    // Only changed data keys: every op is under /data.
    for op in &patch.0 {
        let path = serde_json::to_value(op).unwrap()["path"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(path.starts_with("/data/"), "{path}");
    }
    let patched = apply(&review, &patch);
    assert_eq!(patched, engine_result(&review, &values()));
    assert_federated(&patched, "shared-tools");
    let m = s.metrics_text().await;
    assert_eq!(
        metric(
            &m,
            r#"promfed_admission_requests_total{operation="CREATE",result="patched"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "promfed_patches_sent_total"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_is_patched_and_deterministic() {
    let s = TestServer::start(Opts::default()).await;
    let review = fixture(UPDATE);
    let body = bytes(&review);
    let first = s
        .client()
        .post(s.url())
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let second = s
        .client()
        .post(s.url())
        .body(body)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // kapp compares the answers to repeated UPDATEs byte for byte in effect.
    assert_eq!(first, second);
    let resp: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(resp["response"]["uid"], review["request"]["uid"]);
    let patched = apply(&review, &response_patch(&resp).expect("a patch"));
    assert_eq!(patched, engine_result(&review, &values()));
    assert_federated(&patched, "shared-tools");
    // The edit made by the update survives the rewrite.
    assert!(
        patched["data"]["prometheus.yml"]
            .as_str()
            .unwrap()
            .contains("scrape_interval: 30s")
    );

    // The rewritten object, sent again as the next UPDATE: nothing left to change.
    let mut again = review.clone();
    again["request"]["oldObject"] = review["request"]["object"].clone();
    again["request"]["object"] = patched;
    let (status, resp) = s.post(bytes(&again)).await;
    assert_eq!(status, 200);
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none(), "{resp}");
    assert!(resp["response"].get("patchType").is_none(), "{resp}");
    let m = s.metrics_text().await;
    assert_eq!(
        metric(
            &m,
            r#"promfed_admission_requests_total{operation="UPDATE",result="unchanged"}"#
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_cases_are_allowed_without_patch() {
    let s = TestServer::start(Opts::default()).await;
    let mut other_labels = fixture(CREATE);
    other_labels["request"]["object"]["metadata"]["labels"]["app"] = json!("grafana");
    let mut other_name = fixture(CREATE);
    other_name["request"]["object"]["metadata"]["name"] = json!("prometheus-server-extra");
    other_name["request"]["name"] = json!("prometheus-server-extra");
    let mut connect = fixture(SECRET);
    connect["request"]["operation"] = json!("CONNECT");
    let cases = [
        ("DELETE", fixture(DELETE)),
        ("other kind", fixture(SECRET)),
        ("non-matching labels", other_labels),
        ("non-matching name", other_name),
        ("CONNECT", connect),
    ];
    for (name, review) in cases {
        let (status, resp) = s.post(bytes(&review)).await;
        assert_eq!(status, 200, "{name}: {resp}");
        assert_eq!(resp["response"]["uid"], review["request"]["uid"], "{name}");
        assert_eq!(resp["response"]["allowed"], true, "{name}: {resp}");
        assert!(resp["response"].get("patch").is_none(), "{name}: {resp}");
    }
    let m = s.metrics_text().await;
    assert_eq!(
        metric(
            &m,
            r#"promfed_admission_requests_total{operation="DELETE",result="skipped"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"promfed_admission_requests_total{operation="CREATE",result="skipped"}"#
        ),
        3.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_behaves_the_same() {
    let s = TestServer::start(Opts::default()).await;
    let review = fixture(CREATE);
    let mut dry = review.clone();
    dry["request"]["dryRun"] = json!(true);
    let (_, wet) = s.post(bytes(&review)).await;
    let (status, dry_resp) = s.post(bytes(&dry)).await;
    assert_eq!(status, 200);
    assert_eq!(dry_resp, wet);
    assert!(response_patch(&dry_resp).is_some());
}

fn broken_yaml_review() -> Value {
    let mut review = fixture(CREATE);
    review["request"]["object"]["data"]["prometheus.yml"] =
        json!("scrape_configs:\n- job_name: x\n  static_configs: [\n");
    review
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_yaml_is_denied_with_the_place() {
    let s = TestServer::start(Opts::default()).await;
    let review = broken_yaml_review();
    let (status, resp) = s.post(bytes(&review)).await;
    assert_eq!(status, 200, "admission failures travel inside the review");
    assert_eq!(resp["response"]["uid"], review["request"]["uid"]);
    assert_eq!(resp["response"]["allowed"], false);
    let msg = resp["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("prometheus.yml"), "{msg}");
    assert!(
        msg.contains("tanzu-system-monitoring/prometheus-server"),
        "{msg}"
    );
    assert_eq!(resp["response"]["status"]["code"], 403);
    assert!(resp["response"].get("patch").is_none());
    let m = s.metrics_text().await;
    assert_eq!(
        metric(
            &m,
            r#"promfed_admission_requests_total{operation="CREATE",result="denied"}"#
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_allow_lets_it_through_with_a_warning() {
    let values = format!("{VALUES}onError: allow\n");
    let s = TestServer::start(Opts {
        values: Some(values),
        ..Opts::default()
    })
    .await;
    let (status, resp) = s.post(bytes(&broken_yaml_review())).await;
    assert_eq!(status, 200);
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    assert!(resp["response"].get("patch").is_none());
    let warnings = resp["response"]["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("prometheus.yml") && w.contains("onError"))),
        "{warnings:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP status cases, in process: the admission router driven with `tower::ServiceExt::oneshot`
// (no sockets; TLS, HTTP/2, rotation, slow clients and shutdown keep real sockets below).

/// The admission router over `values`, and its state (for the metrics).
fn router(max_body_bytes: usize, request_timeout: Duration) -> (axum::Router, Arc<AppState>) {
    let state = Arc::new(AppState::new(
        values(),
        Arc::new(promfed::metrics::Metrics::new()),
        max_body_bytes,
        request_timeout,
    ));
    state.set_ready();
    (promfed::server::app(state.clone()), state)
}

/// Sends one request through the router; returns the status and the body (JSON when it is).
async fn oneshot(router: axum::Router, req: Request<Body>) -> (u16, Value) {
    let r = router.oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

fn post_mutate(body: impl Into<Body>) -> Request<Body> {
    Request::post("/mutate")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

fn requests_metric(state: &AppState, result: &str) -> f64 {
    let text = state.metrics.encode().unwrap();
    metric(
        &text,
        &format!(r#"promfed_admission_requests_total{{operation="UNKNOWN",result="{result}"}}"#),
    )
}

#[tokio::test]
async fn malformed_requests_get_400_with_json() {
    let (app, state) = router(8 * 1024 * 1024, Duration::from_secs(30));
    let mut v1beta1 = fixture(CREATE);
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_request = fixture(CREATE);
    no_request.as_object_mut().unwrap().remove("request");
    let mut wrong_kind = fixture(CREATE);
    wrong_kind["kind"] = json!("ConfigMap");
    let mut no_uid = fixture(CREATE);
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "not JSON",
            b"apiVersion: admission.k8s.io/v1\n".to_vec(),
            "not JSON",
        ),
        ("v1beta1", bytes(&v1beta1), "admission.k8s.io/v1beta1"),
        ("no request", bytes(&no_request), "no request"),
        ("wrong kind", bytes(&wrong_kind), "ConfigMap"),
        ("no uid", bytes(&no_uid), "uid"),
    ];
    for (name, body, want) in cases {
        let (status, resp) = oneshot(app.clone(), post_mutate(body)).await;
        assert_eq!(status, 400, "{name}: {resp}");
        assert_eq!(resp["code"], 400, "{name}: {resp}");
        let e = resp["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {resp}"));
        assert!(e.contains(want), "{name}: {e}");
    }
    assert_eq!(requests_metric(&state, "invalid"), 5.0);
}

#[tokio::test]
async fn over_the_limit_gets_413_declared_or_streamed() {
    let limit = 64 * 1024;
    let (app, state) = router(limit, Duration::from_secs(30));
    let mut review = fixture(CREATE);
    review["request"]["object"]["data"]["padding"] = json!("x".repeat(limit));
    let body = bytes(&review);
    // Declared by Content-Length (refused before reading), and without it (counted while read).
    let declared = Request::post("/mutate")
        .header("content-length", body.len())
        .body(Body::from(body.clone()))
        .unwrap();
    for (name, req) in [("declared", declared), ("streamed", post_mutate(body))] {
        let (status, resp) = oneshot(app.clone(), req).await;
        assert_eq!(status, 413, "{name}: {resp}");
        assert!(
            resp["error"].as_str().unwrap().contains(&limit.to_string()),
            "{name}: {resp}"
        );
    }
    assert_eq!(requests_metric(&state, "too_large"), 2.0);
    // Exactly at the limit is read and answered.
    let small = bytes(&fixture(DELETE));
    let (app, _) = router(small.len(), Duration::from_secs(30));
    let (status, resp) = oneshot(app, post_mutate(small)).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn http1_responses_close_the_connection_once_shutdown_starts() {
    let (app, state) = router(8 * 1024 * 1024, Duration::from_secs(30));
    let review = || post_mutate(bytes(&fixture(DELETE)));
    let r = app.clone().oneshot(review()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("connection").is_none());
    state.begin_shutdown();
    // Still answered (the shutdown delay serves on), but the HTTP/1.1 client is told to close.
    let r = app.clone().oneshot(review()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["connection"], "close");
    let mut bad = post_mutate(b"{".to_vec());
    *bad.version_mut() = axum::http::Version::HTTP_11;
    let r = app.clone().oneshot(bad).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["connection"], "close");
    // HTTP/2 has no Connection header (the connection gets GOAWAY instead).
    let mut h2 = review();
    *h2.version_mut() = axum::http::Version::HTTP_2;
    let r = app.oneshot(h2).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("connection").is_none());
}

/// A body that never sends a byte (a client that stalls after its headers).
struct Stalled;

impl axum::body::HttpBody for Stalled {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn stalled_body_gets_408() {
    let (app, state) = router(8 * 1024 * 1024, Duration::from_millis(100));
    let (status, resp) = oneshot(app, post_mutate(Body::new(Stalled))).await;
    assert_eq!(status, 408, "{resp}");
    assert!(
        resp["error"].as_str().unwrap().contains("request timeout"),
        "{resp}"
    );
    assert_eq!(requests_metric(&state, "timeout"), 1.0);
}

#[tokio::test]
async fn wrong_method_and_path() {
    let (app, state) = router(8 * 1024 * 1024, Duration::from_secs(30));
    let get = Request::get("/mutate").body(Body::empty()).unwrap();
    let (status, _) = oneshot(app.clone(), get).await;
    assert_eq!(status, 405);
    let (status, _) = oneshot(
        app,
        Request::post("/validate")
            .body(Body::from(bytes(&fixture(CREATE))))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    // Neither reached the handler.
    let text = state.metrics.encode().unwrap();
    assert!(
        !text.contains("promfed_admission_requests_total{"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_gets_413_over_http1_and_http2() {
    let limit = 64 * 1024;
    let s = TestServer::start(Opts {
        max_body_bytes: limit,
        ..Opts::default()
    })
    .await;
    let mut review = fixture(CREATE);
    // Far over the limit: the client is still sending when the 413 is ready (HTTP/2 flow control
    // lets it send only what the server reads).
    review["request"]["object"]["data"]["padding"] = json!("x".repeat(64 * limit));
    let body = bytes(&review);
    for alpn in [&[b"http/1.1".as_slice()][..], &[b"h2".as_slice()][..]] {
        let client = s.client_with(&[&rustls::version::TLS13], alpn, true);
        let what = format!("{alpn:?}");
        let r = client
            .post(s.url())
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(r.status(), 413, "{what}");
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert!(
            v["error"].as_str().unwrap().contains(&limit.to_string()),
            "{what}: {v}"
        );
    }
    // The server stays healthy: a valid review on the same kind of client is served.
    let (status, _) = s.post(bytes(&fixture(DELETE))).await;
    assert_eq!(status, 200);
}

/// Over HTTP/2 the 413 arrives as a normal response and the stream is not reset while the client
/// is still sending (curl reports a reset stream as "Stream error in the HTTP/2 framing layer"
/// and drops the response; reqwest shows the response either way, hence the raw h2 client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_over_http2_is_not_reset() {
    let limit = 64 * 1024;
    let s = TestServer::start(Opts {
        max_body_bytes: limit,
        ..Opts::default()
    })
    .await;
    let body = vec![b'x'; 32 * limit];
    let cfg = support::client_tls(&s.ca.cert_der, &[&rustls::version::TLS13], &[b"h2"]);
    let tcp = tokio::net::TcpStream::connect(s.admission).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post(s.url())
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(req, false).unwrap();
    let sender = tokio::spawn(async move {
        let mut rest = &body[..];
        while !rest.is_empty() {
            send.reserve_capacity(rest.len());
            let n = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(n)) => n.min(rest.len()),
                Some(Err(e)) => return Err(format!("{e}")),
                None => return Err("stream closed while sending".to_owned()),
            };
            let (chunk, tail) = rest.split_at(n);
            send.send_data(axum::body::Bytes::copy_from_slice(chunk), tail.is_empty())
                .map_err(|e| e.to_string())?;
            rest = tail;
        }
        Ok(())
    });
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(response.status(), 413);
    let mut answer = Vec::new();
    let mut data = response.into_body();
    while let Some(chunk) = data.data().await {
        let chunk = chunk.expect("the 413 body arrives whole");
        let _ = data.flow_control().release_capacity(chunk.len());
        answer.extend_from_slice(&chunk);
    }
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["code"], 413, "{v}");
    let sent = tokio::time::timeout(BOUND, sender)
        .await
        .expect("sent")
        .unwrap();
    assert_eq!(
        sent,
        Ok(()),
        "the stream was reset while the client was sending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_tls12_work() {
    let s = TestServer::start(Opts::default()).await;
    let body = bytes(&fixture(CREATE));
    let h2 = s.client_with(&[&rustls::version::TLS13], &[b"h2"], true);
    let r = h2.post(s.url()).body(body.clone()).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let h1 = s.client_with(&[&rustls::version::TLS13], &[b"http/1.1"], true);
    let r = h1.post(s.url()).body(body.clone()).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    // A client that speaks nothing but TLS 1.2 gets through.
    let tls12 = s.client_with(&[&rustls::version::TLS12], &[b"h2", b"http/1.1"], true);
    let r = tls12.post(s.url()).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let resp: Value = r.json().await.unwrap();
    assert!(response_patch(&resp).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_reaches_new_connections_without_failures() {
    let mut s = TestServer::start(Opts::default()).await;
    let body = bytes(&fixture(DELETE));
    // A new client per request: every request is a new connection and handshake.
    let ca = s.ca.cert_der.clone();
    let new_client = move || {
        support::tls_client(
            &ca,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            &[b"h2", b"http/1.1"],
            false,
        )
    };
    let client = new_client();
    let peer = |r: &reqwest::Response| {
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec)
    };
    let r = client
        .post(s.url())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(peer(&r).as_deref(), Some(s.leaf.der.as_slice()));
    let m = s.metrics_text().await;
    // rcgen's default notAfter, 4096-01-01.
    assert_eq!(
        metric(&m, "promfed_certificate_expiry_timestamp_seconds"),
        67_090_118_400.0,
        "{m}"
    );

    let new = s.ca.leaf(Some(2040));
    s.rotate(&new);
    let mut requests = 0;
    wait_for("new certificate served", || {
        requests += 1;
        let (client, body, url, new_der) = (new_client(), body.clone(), s.url(), new.der.clone());
        async move {
            let r = client
                .post(url)
                .body(body)
                .send()
                .await
                .expect("no failed request during rotation");
            assert_eq!(r.status(), 200);
            peer(&r).as_deref() == Some(new_der.as_slice())
        }
    })
    .await;
    assert!(requests >= 1);
    let m = s.metrics_text().await;
    assert_eq!(
        metric(&m, "promfed_certificate_expiry_timestamp_seconds"),
        2_208_988_800.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"promfed_config_reloads_total{kind="certificate"}"#),
        1.0,
        "{m}"
    );

    // A broken certificate keeps the current one in service.
    s.rotate(&support::Leaf {
        cert_pem: "garbage".into(),
        key_pem: new.key_pem.clone(),
        der: vec![],
    });
    let s_metrics = s.metrics;
    wait_for("failure counted", || async move {
        let text = support::metrics_at(s_metrics).await;
        metric(
            &text,
            r#"promfed_config_reload_failures_total{kind="certificate"}"#,
        ) >= 1.0
    })
    .await;
    let r = new_client().post(s.url()).body(body).send().await.unwrap();
    assert_eq!(peer(&r).as_deref(), Some(new.der.as_slice()));
}

/// The `replacement` of the first relabel rule the response patch adds.
async fn local_name_in_use(s: &TestServer) -> String {
    let review = fixture(CREATE);
    let (_, resp) = s.post(bytes(&review)).await;
    let patched = apply(&review, &response_patch(&resp).expect("a patch"));
    let cfg: serde_yaml::Value =
        serde_yaml::from_str(patched["data"]["prometheus.yml"].as_str().unwrap()).unwrap();
    let relabels = cfg["scrape_configs"][0]["relabel_configs"]
        .as_sequence()
        .unwrap();
    relabels
        .iter()
        .find(|r| r["target_label"].as_str() == Some("cluster"))
        .and_then(|r| r["replacement"].as_str())
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_reload_good_then_broken() {
    let s = TestServer::start(Opts::default()).await;
    assert_eq!(local_name_in_use(&s).await, "shared-tools");
    // The same ConfigMap again is answered from the rewrite memo...
    assert_eq!(local_name_in_use(&s).await, "shared-tools");
    let m = s.metrics_text().await;
    assert!(metric(&m, "promfed_rewrite_memo_hits_total") >= 1.0, "{m}");
    let misses = metric(&m, "promfed_rewrite_memo_misses_total");
    assert!(misses >= 1.0, "{m}");

    // ...which must not outlive the values it was computed with (the loop below sends that
    // same ConfigMap). The values ConfigMap volume is swapped atomically by the kubelet: write it the same way.
    support::replace_file(
        &s.values_path,
        &VALUES.replace(
            "localClusterName: shared-tools",
            "localClusterName: central",
        ),
    );
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    while seen != "central" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "values not reloaded; still {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = local_name_in_use(&s).await;
    }
    let m = s.metrics_text().await;
    assert_eq!(
        metric(&m, r#"promfed_config_reloads_total{kind="values"}"#),
        1.0,
        "{m}"
    );

    support::replace_file(&s.values_path, "localClusterName: [unclosed\n");
    let metrics = s.metrics;
    wait_for("reload failure counted", || async move {
        let text = support::metrics_at(metrics).await;
        metric(
            &text,
            r#"promfed_config_reload_failures_total{kind="values"}"#,
        ) == 1.0
    })
    .await;
    // The last good values stay in use, and the server stays ready.
    assert_eq!(local_name_in_use(&s).await, "central");
    let r = support::plain_client()
        .get(format!("http://{}/readyz", s.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_format() {
    let s = TestServer::start(Opts::default()).await;
    let c = support::plain_client();
    for path in ["healthz", "readyz"] {
        let r = c
            .get(format!("http://{}/{path}", s.metrics))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let _ = s.post(bytes(&fixture(CREATE))).await;
    let m = s.metrics_text().await;
    for family in [
        "# TYPE promfed_admission_requests counter",
        "# TYPE promfed_rewrite_duration_seconds histogram",
        "# TYPE promfed_patches_sent counter",
        "# TYPE promfed_config_reloads counter",
        "# TYPE promfed_config_reload_failures counter",
        "# TYPE promfed_certificate_expiry_timestamp_seconds gauge",
        "# TYPE promfed_rewrite_memo_hits counter",
        "# TYPE promfed_rewrite_memo_misses counter",
    ] {
        assert!(m.contains(family), "{family} missing:\n{m}");
    }
    assert_eq!(
        metric(&m, "promfed_rewrite_duration_seconds_count"),
        1.0,
        "{m}"
    );
    // The admission port serves TLS only.
    let plain = c
        .post(format!("http://{}/mutate", s.admission))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));
}

/// Opens a raw TLS connection (HTTP/1.1) to the admission port.
async fn raw_tls(s: &TestServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = support::client_tls(&s.ca.cert_der, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(s.admission).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

async fn read_response(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(BOUND, tls.read_to_end(&mut out))
        .await
        .expect("response within the bound");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_cut_off_by_the_request_timeout() {
    let s = TestServer::start(Opts {
        request_timeout: Duration::from_millis(300),
        ..Opts::default()
    })
    .await;
    let mut tls = raw_tls(&s).await;
    tls.write_all(b"POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{")
        .await
        .unwrap();
    let response = read_response(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("request timeout"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let mut s = TestServer::start(Opts::default()).await;
    let review = fixture(CREATE);
    let body = bytes(&review);
    let (head, tail) = body.split_at(body.len() / 2);
    let mut tls = raw_tls(&s).await;
    tls.write_all(
        format!(
            "POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tls.write_all(head).await.unwrap();
    tls.flush().await.unwrap();
    // The request is in the handler (reading its body) before shutdown starts.
    let metrics = s.metrics;
    wait_for("request in flight", || async move {
        let text = support::metrics_at(metrics).await;
        metric(&text, "promfed_admission_requests_in_flight") == 1.0
    })
    .await;
    let serve = s.trigger_shutdown();
    let metrics = s.metrics;
    wait_for("readyz fails once shutdown starts", || async move {
        match support::plain_client()
            .get(format!("http://{metrics}/readyz"))
            .send()
            .await
        {
            Ok(r) => r.status() == 503,
            Err(_) => true,
        }
    })
    .await;
    // No new connections are taken.
    let (admission, ca) = (s.admission, s.ca.cert_der.clone());
    wait_for("admission port closed", || {
        let ca = ca.clone();
        async move {
            let cfg = support::client_tls(&ca, &[&rustls::version::TLS13], &[b"http/1.1"]);
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
            match tokio::net::TcpStream::connect(admission).await {
                Err(_) => true,
                Ok(tcp) => {
                    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
                    connector.connect(name, tcp).await.is_err()
                }
            }
        }
    })
    .await;
    // The in-flight request completes.
    tls.write_all(tail).await.unwrap();
    tls.flush().await.unwrap();
    let response = read_response(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let json_start = response.find("\r\n\r\n").unwrap() + 4;
    let resp: Value = serde_json::from_str(&response[json_start..]).unwrap();
    assert_eq!(resp["response"]["uid"], review["request"]["uid"]);
    assert!(response_patch(&resp).is_some());
    let result = tokio::time::timeout(BOUND, serve)
        .await
        .expect("serve returns")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

const DEPLOYMENT: &str = include_str!("fixtures/admission/deployment-create.json");
const SECRETS: &str = "federationSecrets:\n- secretName: prometheus-federation\n  mountPath: /etc/prometheus/addCerts/federation\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_gets_the_federation_secret_mounted_once() {
    let values_text = format!("{VALUES}{SECRETS}");
    let s = TestServer::start(Opts {
        values: Some(values_text.clone()),
        ..Opts::default()
    })
    .await;
    let values = Values::from_yaml_str(&values_text).unwrap();
    let review = fixture(DEPLOYMENT);
    let (status, resp) = s.post(bytes(&review)).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["response"]["allowed"], true, "{resp}");
    let patch = response_patch(&resp).expect("a patch");
    let mut patched = apply(&review, &patch);
    assert_eq!(patched, engine_result(&review, &values));
    let pod = &patched["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][2],
        json!({"name": "promfed-prometheus-federation", "secret": {"secretName": "prometheus-federation"}})
    );
    assert_eq!(
        pod["containers"][1]["volumeMounts"][2],
        json!({"mountPath": "/etc/prometheus/addCerts/federation", "name": "promfed-prometheus-federation", "readOnly": true})
    );
    // The reload sidecar is untouched.
    assert_eq!(
        pod["containers"][0],
        review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]
    );

    // Stored by the API server (which defaults defaultMode: 420) and sent again: no patch.
    patched["spec"]["template"]["spec"]["volumes"][2]["secret"]["defaultMode"] = json!(420);
    let mut again = review.clone();
    again["request"]["operation"] = json!("UPDATE");
    again["request"]["oldObject"] = review["request"]["object"].clone();
    again["request"]["object"] = patched;
    let (status, resp) = s.post(bytes(&again)).await;
    assert_eq!(status, 200);
    assert!(resp["response"].get("patch").is_none(), "{resp}");

    // A Deployment without the configured container is denied, naming the containers there are.
    let mut renamed = review.clone();
    renamed["request"]["object"]["spec"]["template"]["spec"]["containers"][1]["name"] =
        json!("prometheus");
    let (status, resp) = s.post(bytes(&renamed)).await;
    assert_eq!(status, 200);
    assert_eq!(resp["response"]["allowed"], false, "{resp}");
    let message = resp["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("no container \"prometheus-server\"")
            && message.contains("prometheus-server-configmap-reload, prometheus"),
        "{message}"
    );
}
