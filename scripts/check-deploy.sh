#!/usr/bin/env bash
# Structural checks of the deployment files (Dockerfile, deploy/docker-compose.yml, deploy/k8s/),
# without a Docker engine or a Kubernetes cluster. Usage: scripts/check-deploy.sh
#
# - Dockerfile: its JSON-form instructions parse (Docker silently runs a malformed one as a
#   shell command), COPY sources exist and are not excluded by .dockerignore, every file the
#   cargo build needs (Cargo.toml's targets, include_str! sources) is copied into the builder,
#   and the build packages match the rdkafka features Cargo.toml enables.
# - deploy/docker-compose.yml: parses with docker-compose 1.29 (and `docker compose`, when that
#   is installed), bind-mount sources and build contexts exist, kafka-init creates the topics the
#   config names (the changelog compacted and co-partitioned), the simulator writes to an events
#   topic.
# - deploy/k8s: `kubectl kustomize` renders it and kubernetes-validate --strict accepts the
#   result for Kubernetes 1.30 and 1.37 (and secret.example.yaml, which is not in it); selectors
#   match the pod labels; the config is a directory mount of the generated ConfigMap;
#   deploy/k8s/churnwatch.toml equals config/churnwatch.toml.
# - With a churnwatch binary (CHURNWATCH_BIN, else target/release/churnwatch, else on PATH):
#   the subcommands and flags the image, compose and the Deployment run are accepted
#   (`churnwatch <args> --help`), and the config files are valid with the environment overrides
#   each of them sets (`churnwatch check-config`). Skipped, with a note, without a binary.
#
# Installs only what is missing: Debian's docker-compose, PyPI's kubernetes-validate.
# Exits non-zero at the first failed step, naming the file and what is wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "check-deploy: FAIL: $*" >&2
    exit 1
}

echo "== tools"
if ! command -v docker-compose >/dev/null 2>&1; then
    echo "installing Debian's docker-compose"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
# The same interpreter runs kubernetes-validate and the checks below (they need its PyYAML).
if ! python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
    echo "installing kubernetes-validate from PyPI"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        python3 -m pip install --quiet kubernetes-validate
fi
docker-compose version --short
python3 -m kubernetes_validate --version
kustomize_cmd=()
if command -v kubectl >/dev/null 2>&1; then
    kustomize_cmd=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
    kustomize_cmd=(kustomize build)
fi
bin="${CHURNWATCH_BIN:-}"
if [[ -z "$bin" && -x target/release/churnwatch ]]; then
    bin=target/release/churnwatch
elif [[ -z "$bin" ]] && command -v churnwatch >/dev/null 2>&1; then
    bin=$(command -v churnwatch)
fi
if [[ -n "$bin" ]]; then
    [[ -x "$bin" ]] || fail "CHURNWATCH_BIN=$bin is not an executable"
    echo "churnwatch binary: $bin ($("$bin" --version))"
else
    echo "churnwatch binary: none (flags and config overrides are not checked; build with"
    echo "  cargo build --release, or set CHURNWATCH_BIN)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== files"
for f in Dockerfile .dockerignore deploy/docker-compose.yml deploy/k8s/kustomization.yaml \
    deploy/k8s/deployment.yaml deploy/k8s/service.yaml deploy/k8s/pdb.yaml \
    deploy/k8s/secret.example.yaml deploy/k8s/churnwatch.toml config/churnwatch.toml; do
    [[ -f "$f" ]] || fail "$f is missing"
done
cmp -s config/churnwatch.toml deploy/k8s/churnwatch.toml ||
    fail "deploy/k8s/churnwatch.toml differs from config/churnwatch.toml (kustomize cannot read" \
        "files outside deploy/k8s, so it keeps a copy): cp config/churnwatch.toml deploy/k8s/churnwatch.toml"
echo "deploy/k8s/churnwatch.toml equals config/churnwatch.toml"

echo "== compose"
docker-compose -f deploy/docker-compose.yml config -q ||
    fail "docker-compose 1.29 cannot parse deploy/docker-compose.yml (message above)"
echo "docker-compose $(docker-compose version --short): deploy/docker-compose.yml parses"
if docker compose version >/dev/null 2>&1; then
    docker compose -f deploy/docker-compose.yml config -q ||
        fail "docker compose (v2) cannot parse deploy/docker-compose.yml (message above)"
    echo "docker compose $(docker compose version --short): deploy/docker-compose.yml parses"
fi
docker-compose -f deploy/docker-compose.yml config >"$tmp/compose.yml"

echo "== kubernetes"
if ((${#kustomize_cmd[@]})); then
    "${kustomize_cmd[@]}" deploy/k8s >"$tmp/k8s.yaml" ||
        fail "${kustomize_cmd[*]} deploy/k8s failed (message above)"
    echo "${kustomize_cmd[*]} deploy/k8s: $(grep -c '^kind:' "$tmp/k8s.yaml") resources"
    k8s_rendered="$tmp/k8s.yaml"
else
    # Neither kubectl nor kustomize (no Debian package has them): validate the files the
    # kustomization lists as they are; the generated ConfigMap is checked by name below.
    echo "no kubectl or kustomize: validating deploy/k8s's resource files without rendering"
    k8s_rendered=""
fi
# kubernetes-validate reads stdin only once, so it gets files; one run per version.
validate() {
    local f
    for v in 1.30.0 1.37.0; do
        for f in "$@"; do
            python3 -m kubernetes_validate --strict --quiet -k "$v" "$f" ||
                fail "kubernetes-validate --strict -k $v rejects" \
                    "$([[ $f == "$k8s_rendered" ]] && echo "deploy/k8s as kustomize renders it" || echo "$f")" \
                    "(message above)"
        done
    done
}
if [[ -n "$k8s_rendered" ]]; then
    validate "$k8s_rendered" deploy/k8s/secret.example.yaml
else
    mapfile -t k8s_files < <(python3 -c '
import sys, yaml
k = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
for r in k.get("resources", []):
    print("deploy/k8s/" + r)')
    validate "${k8s_files[@]}" deploy/k8s/secret.example.yaml
fi
echo "kubernetes-validate --strict (1.30.0, 1.37.0): accepted"

echo "== cross-references"
python3 - "$tmp/compose.yml" "$k8s_rendered" "$bin" <<'PY'
import json, os, re, subprocess, sys, tomllib
import yaml

compose_path, k8s_path, binary = sys.argv[1], sys.argv[2], sys.argv[3]
errors = []


def err(msg):
    errors.append(msg)


# ---------------------------------------------------------------- Dockerfile
def dockerfile_instructions(path):
    out, cur = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not cur and (line.lstrip().startswith("#") or not line.strip()):
            continue
        if cur and line.lstrip().startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def dockerignore_patterns(path):
    pats = []
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        p = line[1:] if neg else line
        p = p.strip("/")
        rx = ""
        i = 0
        while i < len(p):
            if p.startswith("**", i):
                rx += ".*"
                i += 2
                if p.startswith("/", i):
                    rx += "/?"
                    i += 1
            elif p[i] == "*":
                rx += "[^/]*"
                i += 1
            elif p[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(p[i])
                i += 1
        pats.append((neg, re.compile(rx + r"\Z")))
    return pats


IGNORE = dockerignore_patterns(".dockerignore")


def ignored(rel):
    """Docker's rule: the last matching pattern decides; a pattern matches a path or a parent."""
    parts = rel.strip("/").split("/")
    result = False
    for neg, rx in IGNORE:
        if any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not neg
    return result


instrs = dockerfile_instructions("Dockerfile")
stages, stage = [], None
copies = {}  # stage -> list of (sources, dest)
for word, rest in instrs:
    if word in ("ENTRYPOINT", "CMD", "HEALTHCHECK", "RUN", "SHELL", "VOLUME"):
        body = rest
        if word == "HEALTHCHECK":
            m = re.search(r"\bCMD\s+(.*)$", rest)
            body = m.group(1) if m else ""
        if body.startswith("["):
            try:
                v = json.loads(body)
                assert isinstance(v, list) and all(isinstance(x, str) for x in v)
            except Exception:
                err(f"Dockerfile: {word} {body[:60]}... is not a JSON array of strings "
                    "(Docker would run it as a shell command instead)")
    if word == "FROM":
        m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
        stage = m.group(2) or str(len(stages))
        stages.append(stage)
        copies[stage] = []
    if word in ("COPY", "ADD"):
        args = rest.split()
        flags = [a for a in args if a.startswith("--")]
        paths = [a for a in args if not a.startswith("--")]
        frm = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
        if frm:
            if frm[0] not in stages:
                err(f"Dockerfile: COPY --from={frm[0]}: no earlier stage of that name")
            continue
        *srcs, dest = paths
        copies[stage].append((srcs, dest))
        for s in srcs:
            if not os.path.exists(s):
                err(f"Dockerfile: COPY {s}: no such file or directory in the build context")
            elif ignored(s):
                err(f"Dockerfile: COPY {s}: excluded by .dockerignore")
def json_form(r):
    try:
        v = json.loads(r)
        return v if isinstance(v, list) else []
    except ValueError:
        return []  # reported above


entry = [json_form(r) for w, r in instrs if w == "ENTRYPOINT"]
cmd = [json_form(r) for w, r in instrs if w == "CMD"]
image_entrypoint = entry[-1] if entry else []
image_cmd = cmd[-1] if cmd else []
if image_entrypoint != ["churnwatch"]:
    err(f'Dockerfile: ENTRYPOINT is {image_entrypoint}, expected ["churnwatch"]')
if not any("/usr/local/bin/churnwatch" in r for w, r in instrs if w == "COPY"):
    err("Dockerfile: the final stage does not copy the binary to /usr/local/bin/churnwatch")

# What the cargo build needs must be in the builder stage (the first one).
cargo = tomllib.load(open("Cargo.toml", "rb"))
needed = ["Cargo.toml", "Cargo.lock"]
if "lib" in cargo:
    needed.append(cargo["lib"].get("path", "src/lib.rs"))
needed += [b.get("path", f"src/bin/{b['name']}.rs") for b in cargo.get("bin", [])]
needed += [b.get("path", f"benches/{b['name']}.rs") for b in cargo.get("bench", [])]
for dirpath, _, files in os.walk("src"):
    for f in files:
        if f.endswith(".rs"):
            p = os.path.join(dirpath, f)
            for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', open(p).read()):
                needed.append(os.path.normpath(os.path.join(dirpath, m.group(1))))
builder_srcs = [s.rstrip("/") for srcs, _ in copies[stages[0]] for s in srcs]
for n in needed:
    if not os.path.exists(n):
        err(f"Cargo.toml/src names {n}, which does not exist")
    elif ignored(n):
        err(f"the cargo build needs {n}, but .dockerignore excludes it")
    elif not any(n == s or n.startswith(s + "/") or s == "." for s in builder_srcs):
        err(f"the cargo build needs {n}, but the Dockerfile's builder stage does not COPY it")

# Build packages for the rdkafka features in use.
rdk = cargo["dependencies"].get("rdkafka", {})
features = set(rdk.get("features", [])) if isinstance(rdk, dict) else set()
if not isinstance(rdk, dict) or rdk.get("default-features", True):
    features |= {"libz"}
dockerfile_text = open("Dockerfile").read()
for feat, pkgs in {
    "ssl": ["libssl-dev", "libssl3"],
    "ssl-vendored": ["perl"],
    "gssapi": ["libsasl2-dev", "libsasl2-2"],
    "sasl": ["libsasl2-dev", "libsasl2-2"],
    "cmake-build": ["cmake"],
    "cmake_build": ["cmake"],
    "zstd": ["libzstd-dev"],
    "curl": ["libcurl4-openssl-dev", "libcurl4"],
    "libz": ["zlib1g-dev"],
}.items():
    for p in pkgs if feat in features else []:
        if not re.search(rf"(?m)^\s*(RUN|&&).*\b{re.escape(p)}\b", dockerfile_text):
            err(f"Cargo.toml enables rdkafka's `{feat}` feature: the Dockerfile must install {p}")
print(f"Dockerfile: {len(instrs)} instructions, stages {stages}, rdkafka features "
      f"{sorted(features)}; {len(needed)} build inputs copied")

# ---------------------------------------------------------------- churnwatch binary
def run_bin(args, env=None, what=""):
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    e.update(env or {})
    r = subprocess.run([binary] + args, env=e, capture_output=True, text=True)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines() or [f"exit code {r.returncode}"]
        why = next((l for l in lines if "error" in l.lower()), lines[0]).strip()
        err(f"{what}: `churnwatch {' '.join(args)}` failed: {why}")
    return r


def check_invocation(argv, env, config_file, what):
    """argv: the arguments after `churnwatch`. Checks flags, and config + env for `run`."""
    if not binary:
        return
    if not argv:
        err(f"{what}: no churnwatch subcommand")
        return
    run_bin(argv + ["--help"], what=what)
    if argv[0] == "run":
        cw = {k: str(v) for k, v in env.items() if k.startswith("CHURNWATCH_")}
        run_bin(["check-config", config_file], env=cw, what=what + " (config with its environment)")


if binary:
    check_invocation(image_cmd, {"CHURNWATCH_HTTP__LISTEN": "0.0.0.0:9464"},
                     "config/churnwatch.toml", "Dockerfile CMD")

# ---------------------------------------------------------------- compose
compose = yaml.safe_load(open(compose_path))
services = compose["services"]
root = os.getcwd()
cfg = tomllib.load(open("config/churnwatch.toml", "rb"))
kafka_cfg = cfg.get("kafka", {})
events = kafka_cfg.get("events_topics", ["customer-events"])
group = kafka_cfg.get("group_id", "churnwatch")
alerts = kafka_cfg.get("alerts_topic", "churn-alerts")
dead = kafka_cfg.get("dead_letter_topic", "churnwatch-dead-letter")
obs_dirs = ["deploy/prometheus", "deploy/grafana"]
for name, svc in services.items():
    b = svc.get("build")
    if b:
        ctx = b["context"] if isinstance(b, dict) else b
        df = os.path.join(ctx, b.get("dockerfile", "Dockerfile") if isinstance(b, dict) else "Dockerfile")
        if not os.path.isdir(ctx) or not os.path.isfile(df):
            err(f"compose {name}: build context {ctx} or its {df} does not exist")
    for v in svc.get("volumes", []):
        src = v.get("source") if isinstance(v, dict) else v.split(":")[0]
        if not src or not src.startswith("/"):
            continue  # a named volume
        rel = os.path.relpath(src, root)
        if os.path.exists(src):
            continue
        # The Prometheus and Grafana files come with the observability work; until its
        # directories are in this checkout, their absence is reported but not an error.
        owner = next((d for d in obs_dirs if rel == d or rel.startswith(d + "/")), None)
        if owner and not os.path.isdir(owner):
            print(f"note: compose {name} mounts {rel}, not in this checkout yet ({owner}/ is absent)")
        else:
            err(f"compose {name}: bind-mount source {rel} does not exist "
                "(Docker would create an empty directory in its place)")
    if b and os.path.abspath(b["context"] if isinstance(b, dict) else b) == root:
        argv = list(svc.get("entrypoint") or image_entrypoint)[1:] + list(svc.get("command") or image_cmd)
        check_invocation(argv, svc.get("environment") or {}, "config/churnwatch.toml",
                         f"compose {name}")
        if argv[:1] == ["simulate"] and "--topic" in argv:
            t = argv[argv.index("--topic") + 1]
            if t not in events:
                err(f"compose {name}: simulates into topic {t}, but the config's events topics are {events}")

init = services.get("kafka-init")
if not init:
    err("compose: no kafka-init service")
else:
    script = " ".join(init.get("command") if isinstance(init.get("command"), list) else [init.get("command") or ""])
    script = script.replace("$$", "$")
    created = {}
    for line in script.splitlines():
        m = re.search(r"--create\b.*--topic\s+(\S+)", line)
        if m:
            p = re.search(r"--partitions\s+(\d+)", line)
            created[m.group(1)] = (int(p.group(1)) if p else None, line)
    for t in events + [alerts, dead]:
        if t not in created:
            err(f"compose kafka-init: does not create topic {t} (named in config/churnwatch.toml)")
    for t in events:
        ch = f"{group}-{t}-changelog"
        if ch not in created:
            err(f"compose kafka-init: does not create the changelog {ch}")
            continue
        parts, line = created[ch]
        if "cleanup.policy=compact" not in line:
            err(f"compose kafka-init: changelog {ch} is not created with cleanup.policy=compact")
        if t in created and parts != created[t][0]:
            err(f"compose kafka-init: changelog {ch} has {parts} partitions, {t} has "
                f"{created[t][0]}: churnwatch refuses a changelog that is not co-partitioned")
prom = "deploy/prometheus/prometheus.yml"
if os.path.isfile(prom):
    text = open(prom).read()
    if "churnwatch:9464" not in text:
        err(f"{prom}: does not scrape churnwatch:9464")
    if "churnwatch.rules.yml" not in text:
        err(f"{prom}: does not load churnwatch.rules.yml")
home = services.get("grafana", {}).get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
if home and os.path.isdir("deploy/grafana/dashboards"):
    f = os.path.join("deploy/grafana/dashboards", os.path.basename(home))
    if not os.path.isfile(f):
        err(f"compose grafana: home dashboard {home} is not in deploy/grafana/dashboards")
print(f"compose: {len(services)} services; topics {sorted(created) if init else []}")

# ---------------------------------------------------------------- kubernetes
kust = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
if "secret.example.yaml" in kust.get("resources", []):
    err("deploy/k8s/kustomization.yaml: secret.example.yaml must not be a resource "
        "(a committed Secret would overwrite the real credentials)")
if k8s_path:
    docs = [d for d in yaml.safe_load_all(open(k8s_path)) if d]
else:
    docs = [d for r in kust.get("resources", []) for d in yaml.safe_load_all(open("deploy/k8s/" + r)) if d]
    for g in kust.get("configMapGenerator", []):
        for f in g.get("files", []):
            if not os.path.isfile("deploy/k8s/" + f.split("=")[-1]):
                err(f"deploy/k8s/kustomization.yaml: configMapGenerator file {f} does not exist")
        docs.append({"kind": "ConfigMap", "metadata": {"name": g["name"]}})
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
configmaps = {d["metadata"]["name"] for d in by_kind.get("ConfigMap", [])}
deps = by_kind.get("Deployment", [])
if len(deps) != 1:
    err(f"deploy/k8s: expected one Deployment, found {len(deps)}")
for dep in deps:
    tpl = dep["spec"]["template"]
    labels = tpl["metadata"].get("labels", {})

    def selects(sel, what):
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            err(f"deploy/k8s: {what} selector {sel} does not match the pod labels {labels}")

    selects(dep["spec"]["selector"]["matchLabels"], "Deployment")
    for s in by_kind.get("Service", []):
        selects(s["spec"].get("selector"), f"Service {s['metadata']['name']}")
    for p in by_kind.get("PodDisruptionBudget", []):
        selects(p["spec"]["selector"].get("matchLabels"), f"PodDisruptionBudget {p['metadata']['name']}")
    vols = {v["name"]: v for v in tpl["spec"].get("volumes", [])}
    grace = tpl["spec"].get("terminationGracePeriodSeconds", 30)
    delivery_s = kafka_cfg.get("delivery_timeout_ms", 30000) / 1000
    if grace <= delivery_s:
        err(f"deploy/k8s: terminationGracePeriodSeconds {grace} leaves no time for a drain "
            f"(the producer flush alone may take kafka.delivery_timeout_ms = {delivery_s:.0f} s)")
    for c in tpl["spec"]["containers"]:
        argv = list(c.get("command") or image_entrypoint)[1:] + list(c.get("args") or image_cmd)
        conf = argv[argv.index("--config") + 1] if "--config" in argv else None
        mounted = False
        for m in c.get("volumeMounts", []):
            v = vols.get(m["name"], {})
            if "configMap" in v and m.get("subPath"):
                err(f"deploy/k8s: ConfigMap volume {m['name']} is mounted with subPath, which never "
                    "receives ConfigMap updates (churnwatch would not see config edits): mount the directory")
            elif "configMap" in v and conf and os.path.dirname(conf) == m["mountPath"].rstrip("/"):
                mounted = True
                if v["configMap"]["name"] not in configmaps:
                    err(f"deploy/k8s: volume {m['name']} uses ConfigMap {v['configMap']['name']}, "
                        f"which the kustomization does not produce ({sorted(configmaps)})")
        if conf and not mounted:
            err(f"deploy/k8s: --config {conf} is not in a ConfigMap directory mount")
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif e.get("valueFrom", {}).get("secretKeyRef"):
                env[e["name"]] = "placeholder"
        listen = env.get("CHURNWATCH_HTTP__LISTEN", "0.0.0.0:9464")
        port = int(listen.rsplit(":", 1)[1])
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            h = c.get(probe, {}).get("httpGet", {})
            pp = ports.get(h.get("port"), h.get("port"))
            if h.get("path") != path or pp != port:
                err(f"deploy/k8s: {probe} should GET {path} on port {port}, has {h.get('path')} on {pp}")
        ann = tpl["metadata"].get("annotations", {})
        if ann.get("prometheus.io/port") != str(port):
            err(f"deploy/k8s: prometheus.io/port annotation {ann.get('prometheus.io/port')} != {port}")
        check_invocation(argv, env, "deploy/k8s/churnwatch.toml", f"deploy/k8s container {c['name']}")
print(f"kubernetes: {', '.join(f'{len(v)} {k}' for k, v in sorted(by_kind.items()))}")

if errors:
    for e in errors:
        print(f"check-deploy: FAIL: {e}", file=sys.stderr)
    sys.exit(1)
if binary:
    print("churnwatch accepts the subcommands, flags and config overrides used")
PY

echo "check-deploy: all checks passed"
