#!/usr/bin/env python3
"""Assertions on the Helm chart's rendered manifests (JSON arrays from `opscheck yaml2json`).

kubeconform proves each manifest is a valid Kubernetes object; this proves it is the object we
mean: restricted pods, probes on the admin port, a grace period above the shutdown time, the
spool's StatefulSet, monitoring objects only with their CRDs, and so on.

usage: chart-assert.py DIR SCENARIO...           (reads DIR/SCENARIO.json, DIR/SCENARIO-nocrd.json)
       chart-assert.py --extract-config FILE.json   prints the rendered graphbridge.toml
       chart-assert.py --extract-rules FILE.json    prints the PrometheusRule's groups as JSON
       chart-assert.py --dashboard-rules DASHBOARD  prints the dashboard's queries as rule groups
"""
import json
import math
import re
import sys
import tomllib

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def load(path):
    with open(path) as f:
        return [d for d in json.load(f) if d]


def find(docs, kind, suffix=None):
    return [d for d in docs if d["kind"] == kind and (suffix is None or d["metadata"]["name"].endswith(suffix))]


def config_of(docs):
    cms = [d for d in find(docs, "ConfigMap") if "graphbridge.toml" in d.get("data", {})]
    return cms[0]["data"]["graphbridge.toml"] if cms else None


def is_hook(d):
    return "helm.sh/hook" in d["metadata"].get("annotations", {})


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]


def assert_restricted(name, spec):
    """The restricted Pod Security Standard, plus a read-only root filesystem."""
    psc = spec.get("securityContext", {})
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: seccomp RuntimeDefault")
    check(spec.get("automountServiceAccountToken") is False, f"{name}: no service account token")
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        where = f"{name}/{c['name']}"
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        check(non_root is True, f"{where}: runAsNonRoot")
        check(uid is not None and uid != 0, f"{where}: a non-zero runAsUser")
        check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL capabilities")
        check("memory" in c.get("resources", {}).get("limits", {}), f"{where}: a memory limit")
        check("cpu" in c.get("resources", {}).get("requests", {}), f"{where}: a CPU request")


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def assert_serve(scenario, docs, cfg):
    spool = cfg.get("spool", {}).get("enabled", False)
    deployments = [d for d in find(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "serve"]
    statefulsets = find(docs, "StatefulSet")
    workloads = statefulsets if spool else deployments
    check(len(workloads) == 1, f"{scenario}: exactly one serve {'StatefulSet' if spool else 'Deployment'}")
    check(len(statefulsets if not spool else deployments) == 0, f"{scenario}: no other serve workload")
    if not workloads:
        return
    w = workloads[0]
    spec = w["spec"]["template"]["spec"]
    c = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    server = cfg.get("server", {})
    check(ports.get("admin") == port_of(server.get("admin_listen", "0.0.0.0:9090")), f"{scenario}: admin port follows server.admin_listen")
    hub = scenario.startswith("eventhubs")
    if not hub:
        check(ports.get("http") == port_of(server.get("listen", "0.0.0.0:8080")), f"{scenario}: http port follows server.listen")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "admin", f"{scenario}: {probe} is GET {path} on the admin port")
    check((hub or c["args"][-1] == "serve") and c["args"][:2] == ["--config", "/etc/graphbridge/config/graphbridge.toml"], f"{scenario}: serve with the mounted config")
    # Shutdown: readiness red, shutdown_delay_ms of serving, drain_timeout_ms, then the flush.
    shutdown_s = (server.get("shutdown_delay_ms", 0) + server.get("drain_timeout_ms", 10000)) / 1000
    check(spec["terminationGracePeriodSeconds"] >= math.ceil(shutdown_s) + 10, f"{scenario}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} covers {shutdown_s} s + flush")
    ann = w["spec"]["template"]["metadata"]["annotations"]
    check(re.fullmatch(r"[0-9a-f]{64}", ann.get("checksum/config", "")), f"{scenario}: config checksum annotation")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    keys_dir = cfg.get("graph", {}).get("keys_dir")
    check(mounts.get("keys", {}).get("mountPath") == keys_dir and "subPath" not in mounts.get("keys", {}), f"{scenario}: keys Secret mounted as graph.keys_dir, without subPath (rotation reaches pods)")
    check("secret" in vols.get("keys", {}), f"{scenario}: keys from a Secret")
    if "client_state_file" in cfg.get("graph", {}):
        path = cfg["graph"]["client_state_file"]
        m = mounts.get("client-state", {})
        check(m and path.startswith(m["mountPath"] + "/"), f"{scenario}: client_state_file {path} is on the client-state Secret mount")
    data = mounts.get("data", {}).get("mountPath")
    check(data == "/var/lib/graphbridge", f"{scenario}: writable data volume at /var/lib/graphbridge")
    check(mounts.get("tmp", {}).get("mountPath") == "/tmp", f"{scenario}: writable /tmp")
    hpas = find(docs, "HorizontalPodAutoscaler")
    if spool:
        check(spool and cfg["spool"]["dir"].startswith("/var/lib/graphbridge"), f"{scenario}: spool.dir on the data volume")
        vct = w["spec"].get("volumeClaimTemplates", [])
        check([v["metadata"]["name"] for v in vct] == ["data"], f"{scenario}: a data volumeClaimTemplate")
        check("data" not in vols, f"{scenario}: spool not on an emptyDir")
        check(w["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain", f"{scenario}: spool PVCs retained on scale-in")
        check(len(find(docs, "Service", "-headless")) == 1, f"{scenario}: headless Service for the StatefulSet")
        check(not hpas, f"{scenario}: no HPA on the StatefulSet by default")
    else:
        check("emptyDir" in vols.get("data", {}), f"{scenario}: emptyDir data without the spool")
        check(w["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, f"{scenario}: rollouts never drop below the desired count")
    if hpas:
        h = hpas[0]["spec"]
        check(h["scaleTargetRef"]["name"] == w["metadata"]["name"] and h["scaleTargetRef"]["kind"] == w["kind"], f"{scenario}: HPA targets serve")
        check([m["resource"]["name"] for m in h["metrics"]] == ["cpu"], f"{scenario}: HPA on CPU")
        check(h["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300, f"{scenario}: HPA scales down slowly")
        check("replicas" not in w["spec"], f"{scenario}: replicas left to the HPA")
    pdbs = find(docs, "PodDisruptionBudget")
    check(len(pdbs) == 1 and pdbs[0]["spec"]["selector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"], f"{scenario}: PodDisruptionBudget on serve")
    svc = [s for s in find(docs, "Service") if s["metadata"]["name"] == w["metadata"]["name"]]
    check(len(svc) == 1 and svc[0]["spec"]["selector"] == w["spec"]["selector"]["matchLabels"], f"{scenario}: Service selects serve")


def assert_scenario(d, scenario):
    docs = load(f"{d}/{scenario}.json")
    toml = config_of(docs)
    check(toml is not None, f"{scenario}: a ConfigMap with graphbridge.toml")
    cfg = tomllib.loads(toml or "")
    for name, spec in pod_specs(docs):
        assert_restricted(f"{scenario}: {name}", spec)
    assert_serve(scenario, docs, cfg)
    hooks = [x for x in docs if is_hook(x) and x["kind"] == "Pod"]
    if not scenario.startswith("eventhubs"):
        check(any(x["metadata"]["name"].endswith("-test-handshake") for x in hooks), f"{scenario}: helm test handshake pod")
    subs = find(docs, "Deployment", "-subscriptions")
    if scenario.startswith("subscriptions"):
        check(len(subs) == 1, f"{scenario}: subscriptions Deployment")
        if subs:
            s = subs[0]["spec"]
            check(s["replicas"] == 1 and s["strategy"]["type"] == "Recreate", f"{scenario}: one subscriptions controller, Recreate")
            check(s["template"]["spec"]["containers"][0]["args"][2:4] == ["subscriptions", "run"], f"{scenario}: runs `subscriptions run`")
        sim = [x for x in hooks if x["metadata"]["name"].endswith("-test-simulate")]
        check(len(sim) == 1, f"{scenario}: helm test simulate pod")
        if sim:
            image = sim[0]["spec"]["containers"][0]["image"]
            check(image.split(":")[0].endswith("-tools"), f"{scenario}: the simulate pod runs the tools image (the production one has no simulator): {image}")
        vt = cfg["graph"].get("validation_tokens", {})
        check(vt.get("openid_config_url", "").startswith("http://gb-graphbridge-test-issuer:8443/"), f"{scenario}: test mode trusts the test issuer")
    else:
        # ingress-monitoring runs the controller too, for its alerts.
        check(bool(subs) == scenario.startswith("ingress-monitoring"), f"{scenario}: no subscriptions controller unless enabled")
        check("validation_tokens" not in cfg.get("graph", {}), f"{scenario}: production token settings untouched")
    if subs:
        spec = subs[0]["spec"]["template"]["spec"]
        c = spec["containers"][0]
        check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{scenario}: the controller's readiness follows its reconcile rounds (/readyz)")
        items = cfg.get("subscriptions", {}).get("items", [])
        check(len(items) >= 1 and all("resource" in i and "notification_url" in i for i in items), f"{scenario}: subscription items from values rendered as [[subscriptions.items]]")
        mounted = any(m["name"] == "graph-auth" and m["mountPath"] == "/etc/graphbridge/graph-auth" for m in c["volumeMounts"])
        check(mounted and any(v.get("secret", {}).get("secretName") == "graphbridge-graph-app" for v in spec["volumes"]), f"{scenario}: the Graph app credential Secret mounted in the controller")
        if "monitoring" in scenario:
            alerts = {r.get("alert") for d in find(docs, "PrometheusRule") for g in d["spec"]["groups"] for r in g["rules"]}
            check({"GraphbridgeSubscriptionControllerAbsent", "GraphbridgeSubscriptionControllerStale"} <= alerts, f"{scenario}: alerts for an absent or stale controller")
    serve_pods = [spec for name, spec in pod_specs(docs) if any(c["name"] == "graphbridge" for c in spec["containers"])]
    if scenario.startswith("eventhubs"):
        c = serve_pods[0]["containers"][0] if serve_pods else {"args": [], "ports": []}
        check(c["args"][2:] == ["serve", "--source", "eventhubs"], f"{scenario}: serve reads Event Hubs")
        check(all(p["name"] != "http" for p in c.get("ports", [])), f"{scenario}: no public port")
        check(not find(docs, "Ingress"), f"{scenario}: no Ingress")
        check(cfg.get("eventhubs", {}).get("connection_string_file") == "/etc/graphbridge/eventhubs/connection-string", f"{scenario}: the connection string file from the Secret")
        check(any(v.get("secret", {}).get("secretName") == "graphbridge-eventhubs" for v in serve_pods[0]["volumes"]) if serve_pods else False, f"{scenario}: the Secret mounted")
    verdicts = find(docs, "Deployment", "-verdicts")
    if scenario.startswith("kafka"):
        check(cfg["sink"]["kafka"].get("sasl_password_file") == "/etc/graphbridge/brokers/kafka-password", f"{scenario}: the SASL password from a file")
        for name, pod in pod_specs(docs):
            if "-test-" in name:  # helm test pods talk to serve, not to the brokers
                continue
            mounted = any(m["name"] == "brokers" and m["mountPath"] == "/etc/graphbridge/brokers" for m in pod["containers"][0]["volumeMounts"])
            check(mounted and any(v.get("secret", {}).get("secretName") == "graphbridge-kafka" for v in pod["volumes"]), f"{scenario}: {name} mounts the brokers Secret")
        check(len(verdicts) == 1, f"{scenario}: verdicts Deployment")
        if verdicts:
            c = verdicts[0]["spec"]["template"]["spec"]["containers"][0]
            check(c["args"][2:4] == ["verdicts", "run"], f"{scenario}: runs `verdicts run`")
    else:
        check(not verdicts, f"{scenario}: no verdict worker unless enabled")
    kinds = {x["kind"] for x in docs}
    if "monitoring" in scenario:
        check({"ServiceMonitor", "PrometheusRule", "Ingress"} <= kinds, f"{scenario}: ServiceMonitor, PrometheusRule, Ingress with the CRDs present")
        check(any(x["metadata"].get("labels", {}).get("grafana_dashboard") == "1" for x in find(docs, "ConfigMap")), f"{scenario}: dashboard ConfigMap")
        ing = find(docs, "Ingress")[0]["spec"]
        check(ing.get("tls"), f"{scenario}: Ingress with TLS")
        paths = {p["path"] for r in ing["rules"] for p in r["http"]["paths"]}
        check(paths == {"/notifications", "/lifecycle"}, f"{scenario}: only the notification paths are routed")
        nocrd = {x["kind"] for x in load(f"{d}/{scenario}-nocrd.json")}
        check(not ({"ServiceMonitor", "PrometheusRule"} & nocrd), f"{scenario}: no ServiceMonitor/PrometheusRule without the CRDs")
    else:
        check(not ({"ServiceMonitor", "PrometheusRule", "Ingress"} & kinds), f"{scenario}: monitoring objects and Ingress are opt-in")
    print(f"ok: {scenario}: {len(docs)} objects ({', '.join(sorted(kinds))})")


def dashboard_rules(path):
    """Dashboard queries as recording rules, with Grafana's variables substituted."""
    with open(path) as f:
        dash = json.load(f)
    rules = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", "5m").replace("$namespace", "ns").replace("$service", ".*")
            rules.append({"record": f"dashboard:panel{p['id']}:{t['refId'].lower()}", "expr": expr})
    return {"groups": [{"name": "grafana-dashboard", "rules": rules}]}


def main():
    if sys.argv[1] == "--extract-config":
        sys.stdout.write(config_of(load(sys.argv[2])))
        return
    if sys.argv[1] == "--extract-rules":
        rules = find(load(sys.argv[2]), "PrometheusRule")
        print(json.dumps({"groups": rules[0]["spec"]["groups"]}))
        return
    if sys.argv[1] == "--dashboard-rules":
        print(json.dumps(dashboard_rules(sys.argv[2])))
        return
    d = sys.argv[1]
    for scenario in sys.argv[2:]:
        assert_scenario(d, scenario)
    if failures:
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
