//! Static checks of `deploy/` and the `Dockerfile`: what an operator applies must be coherent.
//!
//! The schemas and the security posture are `deploy/check.sh`'s (kubernetes-validate with the
//! API schemas bundled, hadolint, checkov; run by `.ci/run`); this parses every manifest and
//! checks what no schema knows: the fields the service relies on, and how the objects refer to
//! each other.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_yaml_ng::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

/// Every manifest, by kind.
fn manifests() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let dir = repo("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("manifest");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", f.display()));
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            out.push((name.to_string(), v));
        }
    }
    out
}

use serde::Deserialize;

fn one(kind: &str) -> Value {
    let all: Vec<_> = manifests()
        .into_iter()
        .filter(|(_, v)| v["kind"].as_str() == Some(kind))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(all.len(), 1, "exactly one {kind}");
    all.into_iter().next().expect("one")
}

#[test]
fn every_manifest_parses_and_names_its_kind_and_api() {
    let all = manifests();
    assert!(all.len() >= 8, "{} manifests", all.len());
    for (file, v) in &all {
        for field in ["apiVersion", "kind"] {
            assert!(v[field].is_string(), "{file}: no {field}");
        }
        if v["kind"] != "Kustomization" {
            assert!(
                v["metadata"]["name"].is_string(),
                "{file}: no metadata.name"
            );
        }
    }
    let kinds: BTreeSet<_> = all
        .iter()
        .filter_map(|(_, v)| v["kind"].as_str().map(str::to_string))
        .collect();
    for k in [
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "Kustomization",
    ] {
        assert!(kinds.contains(k), "no {k} in deploy/kubernetes");
    }
}

#[test]
fn kustomization_lists_every_manifest_but_the_example_secret() {
    let k = yaml("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<String> = k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| s(r, "resource").to_string())
        .collect();
    let files: BTreeSet<String> = manifests()
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| f != "kustomization.yaml" && f != "secret.example.yaml")
        .collect();
    assert_eq!(listed, files);
}

#[test]
fn deployment_probes_resources_security_and_graceful_termination() {
    let d = one("Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for kind in ["requests", "limits"] {
        assert!(
            c["resources"][kind]["memory"].is_string(),
            "resources.{kind}.memory"
        );
    }
    assert!(c["resources"]["requests"]["cpu"].is_string());

    // Non-root with a read-only root filesystem, at pod and container level.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let uid = pod["securityContext"]["runAsUser"].as_u64().expect("uid");
    assert!(uid > 0);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");

    // SIGKILL comes after the preStop pause plus the service's own shutdown bound, with room.
    let cm = one("ConfigMap");
    let grace =
        humantime::parse_duration(s(&cm["data"]["DLQ_SHUTDOWN_GRACE"], "DLQ_SHUTDOWN_GRACE"))
            .expect("DLQ_SHUTDOWN_GRACE is a duration");
    let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .and_then(|cmd| cmd.get(1))
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    let termination = Duration::from_secs(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds"),
    );
    // Service::stop: the workers' grace, then up to 2 s for the HTTP server.
    let needed = pre_stop + grace + Duration::from_secs(2);
    assert!(
        termination > needed + Duration::from_secs(5),
        "terminationGracePeriodSeconds {termination:?} leaves no room after {needed:?}"
    );

    // The HTTP listener binds every interface on the container's port.
    let port = c["ports"][0]["containerPort"].as_u64().expect("port");
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(
        s(&cm["data"]["DLQ_HTTP_ADDR"], "DLQ_HTTP_ADDR"),
        format!("0.0.0.0:{port}")
    );
}

#[test]
fn deployment_reads_config_and_secrets() {
    let d = one("Deployment");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let cm = one("ConfigMap");
    assert_eq!(
        c["envFrom"][0]["configMapRef"]["name"],
        cm["metadata"]["name"]
    );
    assert!(cm["data"]["DLQ_KAFKA_BOOTSTRAP"].is_string());
    assert_eq!(cm["data"]["DLQ_LOG_FORMAT"], "json");

    let secret = yaml("deploy/kubernetes/secret.example.yaml");
    let env = c["env"].as_sequence().expect("env");
    let from_secret = |name: &str| {
        let e = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no env {name}"));
        let r = &e["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], secret["metadata"]["name"], "{name}");
        let key = s(&r["key"], "key");
        assert!(
            secret["stringData"][key].is_string(),
            "{name}: key {key} not in secret.example.yaml"
        );
        r["optional"].as_bool().unwrap_or(false)
    };
    assert!(!from_secret("DLQ_API_TOKEN"), "the API token is required");
    assert!(from_secret("DLQ_KAFKA_SASL_USERNAME"));
    assert!(from_secret("DLQ_KAFKA_SASL_PASSWORD"));
    assert!(
        env.iter().any(|e| e["name"] == "DLQ_INSTANCE_ID"),
        "a stable instance id per pod"
    );
}

#[test]
fn service_pdb_and_servicemonitor_select_the_pods() {
    let d = one("Deployment");
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    let matches = |selector: &Value, labels: &Value, what: &str| {
        let m = selector.as_mapping().expect(what);
        assert!(!m.is_empty(), "{what}: empty selector");
        for (k, v) in m {
            assert_eq!(&labels[k], v, "{what}: {k:?}");
        }
    };
    matches(
        &d["spec"]["selector"]["matchLabels"],
        pod_labels,
        "Deployment",
    );
    let svc = one("Service");
    matches(&svc["spec"]["selector"], pod_labels, "Service");
    assert_eq!(svc["spec"]["ports"][0]["name"], "http");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    // The scrape job is named after the Service; the alert rules select job="workflow-dlq".
    assert_eq!(svc["metadata"]["name"], "workflow-dlq");

    let pdb = one("PodDisruptionBudget");
    matches(&pdb["spec"]["selector"]["matchLabels"], pod_labels, "PDB");
    assert!(pdb["spec"]["maxUnavailable"].is_u64() || pdb["spec"]["minAvailable"].is_u64());
    let replicas = d["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "a PDB over one replica blocks every drain");

    let sm = one("ServiceMonitor");
    matches(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"],
        "ServiceMonitor",
    );
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");

    // The NetworkPolicy lets in what the Service and the probes use, nothing else.
    let np = one("NetworkPolicy");
    matches(
        &np["spec"]["podSelector"]["matchLabels"],
        pod_labels,
        "NetworkPolicy",
    );
    let ingress = np["spec"]["ingress"].as_sequence().expect("ingress rules");
    let ports: Vec<_> = ingress
        .iter()
        .flat_map(|rule| rule["ports"].as_sequence().expect("ports").iter())
        .map(|p| p["port"].clone())
        .collect();
    assert_eq!(ports, [svc["spec"]["ports"][0]["targetPort"].clone()]);
    let container_port = &d["spec"]["template"]["spec"]["containers"][0]["ports"][0];
    assert_eq!(container_port["name"], "http");
}

#[test]
fn prometheusrule_is_the_alert_rules_file() {
    let rule = one("PrometheusRule");
    let alerts = yaml("deploy/prometheus/alerts.yml");
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "deploy/kubernetes/prometheusrule.yaml differs from deploy/prometheus/alerts.yml"
    );
}

#[test]
fn every_alert_has_a_runbook_and_a_promtool_test() {
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let mut names = BTreeSet::new();
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = s(&rule["alert"], "alert").to_string();
            assert!(
                rule["annotations"]["runbook"]
                    .as_str()
                    .is_some_and(|r| r.len() > 20),
                "{name}: no runbook annotation"
            );
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            names.insert(name);
        }
    }
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    let mut firing = BTreeSet::new();
    for t in tests["tests"].as_sequence().expect("tests") {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            if case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
            {
                firing.insert(s(&case["alertname"], "alertname").to_string());
            }
        }
    }
    let untested: Vec<_> = names.difference(&firing).collect();
    assert!(
        untested.is_empty(),
        "alerts without a firing promtool test: {untested:?}"
    );
}

#[test]
fn dockerfile_is_multi_stage_with_a_non_root_runtime() {
    let text = read("Dockerfile");
    let froms: Vec<_> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains("rust"), "a Rust build stage");
    assert!(froms.last().is_some_and(|f| f.contains("slim")));
    for pkg in [
        "libsasl2-dev",
        "libssl-dev",
        "libssl3",
        "libsasl2-2",
        "ca-certificates",
    ] {
        assert!(text.contains(pkg), "Dockerfile installs {pkg}");
    }
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    let uid: u64 = user
        .split(':')
        .next()
        .and_then(|u| u.trim().parse().ok())
        .expect("numeric USER, so runAsNonRoot can check it");
    assert!(uid > 0);
    let d = one("Deployment");
    assert_eq!(
        d["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_u64(),
        Some(uid),
        "the Deployment runs as the image's user"
    );
    assert!(text.contains("--locked"), "builds from Cargo.lock");
}

#[test]
fn grafana_dashboard_uses_a_datasource_variable() {
    let d: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/workflow-dlq.json")).expect("JSON");
    assert_eq!(d["uid"], "workflow-dlq");
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(
                t["expr"].as_str().is_some_and(|e| e.contains("job=")),
                "{}: scoped to the job",
                p["title"]
            );
        }
    }
}
