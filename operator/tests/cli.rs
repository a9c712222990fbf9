//! The `slicecache-operator` binary: `rbac` matches the committed chart
//! file, and `render` output of every example is accepted by kubectl.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
};

const BIN: &str = env!("CARGO_BIN_EXE_slicecache-operator");

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn rbac_output_matches_the_chart_file() {
    let out = Command::new(BIN).arg("rbac").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo_root().join(slicecache_operator::rbac::RULES_FILE)).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "regenerate with: cargo run -p slicecache-operator -- rbac > {}",
        slicecache_operator::rbac::RULES_FILE
    );
}

/// kubectl resolves kinds through API discovery even for a client-side dry
/// run, and finds no API server here. This stub answers discovery for the
/// kinds the operator renders and 404 for every object, which is what a
/// fresh cluster says.
fn discovery_stub() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header == "\r\n" || header.is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (code, body) = discovery_response(path.split('?').next().unwrap_or("/"));
            let response = format!(
                "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{addr}")
}

fn resource(name: &str, kind: &str) -> String {
    format!(
        r#"{{"name":"{name}","singularName":"","namespaced":true,"kind":"{kind}","verbs":["create","delete","get","list","patch","update","watch"]}}"#
    )
}

fn discovery_response(path: &str) -> (&'static str, String) {
    let group = |name: &str| {
        format!(
            r#"{{"name":"{name}","versions":[{{"groupVersion":"{name}/v1","version":"v1"}}],"preferredVersion":{{"groupVersion":"{name}/v1","version":"v1"}}}}"#
        )
    };
    match path {
        "/api" => ("200 OK", r#"{"kind":"APIVersions","versions":["v1"]}"#.into()),
        "/apis" => (
            "200 OK",
            format!(
                r#"{{"kind":"APIGroupList","apiVersion":"v1","groups":[{},{},{}]}}"#,
                group("apps"),
                group("policy"),
                group("rbac.authorization.k8s.io")
            ),
        ),
        "/api/v1" => (
            "200 OK",
            format!(
                r#"{{"kind":"APIResourceList","groupVersion":"v1","resources":[{},{},{}]}}"#,
                resource("configmaps", "ConfigMap"),
                resource("services", "Service"),
                resource("serviceaccounts", "ServiceAccount")
            ),
        ),
        "/apis/apps/v1" => (
            "200 OK",
            format!(
                r#"{{"kind":"APIResourceList","groupVersion":"apps/v1","resources":[{},{}]}}"#,
                resource("daemonsets", "DaemonSet"),
                resource("deployments", "Deployment")
            ),
        ),
        "/apis/policy/v1" => (
            "200 OK",
            format!(
                r#"{{"kind":"APIResourceList","groupVersion":"policy/v1","resources":[{}]}}"#,
                resource("poddisruptionbudgets", "PodDisruptionBudget")
            ),
        ),
        "/apis/rbac.authorization.k8s.io/v1" => (
            "200 OK",
            format!(
                r#"{{"kind":"APIResourceList","groupVersion":"rbac.authorization.k8s.io/v1","resources":[{},{}]}}"#,
                resource("roles", "Role"),
                resource("rolebindings", "RoleBinding")
            ),
        ),
        _ => (
            "404 Not Found",
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.into(),
        ),
    }
}

#[test]
fn rendered_examples_pass_kubectl_client_dry_run() {
    let kubectl = Command::new("kubectl").arg("version").arg("--client").output();
    assert!(
        kubectl.is_ok_and(|o| o.status.success()),
        "kubectl is required for this test and was not found on PATH"
    );
    let server = discovery_stub();
    let home = tempfile::tempdir().unwrap();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty());
    for example in examples {
        let rendered = Command::new(BIN)
            .arg("render")
            .arg("-f")
            .arg(&example)
            .output()
            .unwrap();
        assert!(
            rendered.status.success(),
            "render {}: {}",
            example.display(),
            String::from_utf8_lossy(&rendered.stderr)
        );
        let mut child = Command::new("kubectl")
            .args([
                "apply",
                "--dry-run=client",
                "--validate=false",
                "-f",
                "-",
                "--server",
                &server,
            ])
            .env("HOME", home.path())
            .env("KUBECONFIG", home.path().join("none"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&rendered.stdout).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl rejected the rendering of {}:\n{}\n{stdout}",
            example.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("daemonset.apps/") || stdout.contains("deployment.apps/"),
            "{stdout}"
        );
        assert!(stdout.contains("configmap/"), "{stdout}");
    }
}
