//! The container and Kubernetes files agree with the workspace (toolchain,
//! user id, addresses) and carry no secret values. Their syntax and schemas
//! are checked by `make compose-check` (scripts/compose-check.sh).

use keygate_e2e::repo_root;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

/// The first `"`-quoted value after `key` on its line (`rust-version = "1.89"`)
/// or the rest of the line after `key` (`ARG RUST_VERSION=1.95`).
fn value_after<'a>(text: &'a str, key: &str) -> &'a str {
    let line = text
        .lines()
        .find(|line| line.starts_with(key))
        .unwrap_or_else(|| panic!("no line starting with {key}"));
    let rest = line.trim_start_matches(key);
    rest.split('"').nth(1).unwrap_or(rest).trim()
}

fn version(text: &str) -> Vec<u32> {
    text.split('.').map(|part| part.parse().unwrap()).collect()
}

/// The build stage's Rust is at least the workspace's rust-version.
#[test]
fn image_toolchain_is_at_least_the_workspace_rust_version() {
    let (dockerfile, cargo) = (read("deploy/Dockerfile"), read("Cargo.toml"));
    let image = value_after(&dockerfile, "ARG RUST_VERSION=");
    let workspace = value_after(&cargo, "rust-version =");
    println!("rust image {image}, workspace rust-version {workspace}");
    assert!(version(image) >= version(workspace));
}

/// Every runtime image switches to uid 10001, the uid the Deployment
/// requires, and none runs as root.
#[test]
fn images_and_deployment_run_as_the_same_non_root_uid() {
    let dockerfile = read("deploy/Dockerfile");
    let users: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.starts_with("USER "))
        .collect();
    println!("Dockerfile: {users:?}");
    assert_eq!(users, ["USER 10001:10001", "USER 10001:10001"]);
    let deployment = read("deploy/k8s/deployment.yaml");
    for line in [
        "runAsNonRoot: true",
        "runAsUser: 10001",
        "runAsGroup: 10001",
    ] {
        assert!(deployment.contains(line), "deployment.yaml lacks {line}");
    }
}

/// Compose runs on its bridge network, never the host's, and the feed token
/// and database URL reach the containers from env files only.
#[test]
fn compose_files_use_a_bridge_network_and_no_inline_secrets() {
    for path in ["docker-compose.yml", "docker-compose.postgres.yml"] {
        let text = read(path);
        assert!(!text.contains("network_mode"), "{path} sets network_mode");
        for secret in [
            "KEYGATE_FEED_TOKEN",
            "KEYGATE_DATABASE",
            "POSTGRES_PASSWORD",
        ] {
            let inline = text
                .lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .any(|line| line.contains(secret));
            assert!(!inline, "{path} names {secret} outside a comment");
        }
    }
    assert!(read("docker-compose.yml").contains("driver: bridge"));
}

/// The Deployment runs two replicas whose readiness and liveness are
/// `/healthz`, the control plane's health route, on the port the Service
/// targets.
#[test]
fn deployment_has_two_replicas_probed_on_healthz() {
    let deployment = read("deploy/k8s/deployment.yaml");
    assert!(deployment.contains("replicas: 2"));
    for probe in ["readinessProbe:", "livenessProbe:"] {
        let after = deployment.split(probe).nth(1).unwrap();
        let block: String = after.lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(
            block.contains("path: /healthz") && block.contains("port: http"),
            "{probe} is not GET /healthz on port http:\n{block}"
        );
    }
    assert!(read("deploy/k8s/service.yaml").contains("targetPort: http"));
}

/// The filter image is what Istio pulls as a Wasm plugin (the "compat"
/// variant of the Wasm image spec): `FROM scratch` and exactly one COPY, so
/// exactly one layer, holding `plugin.wasm` at its root.
#[test]
fn filter_image_is_one_layer_with_plugin_wasm() {
    let dockerfile = read("deploy/Dockerfile");
    let stage: Vec<&str> = dockerfile
        .lines()
        .skip_while(|line| *line != "FROM scratch AS filter")
        .skip(1)
        .take_while(|line| !line.starts_with("FROM "))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    println!("filter stage: {stage:?}");
    assert_eq!(stage.len(), 1, "the filter stage must be one COPY");
    assert!(stage
        .iter()
        .all(|line| line.starts_with("COPY ") && line.ends_with(" /plugin.wasm")));
}
