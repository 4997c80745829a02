#!/usr/bin/env python3
"""The deploy files, checked without a cluster or a container engine.

Run by scripts/check-deploy.sh with the Python and kubectl of
scripts/kube-tools.sh (PyYAML comes with kubernetes-validate):

1. `kubectl kustomize` renders deploy/kubernetes and every overlay, and
   kubernetes-validate --strict accepts every object against the oldest and
   the newest Kubernetes release the deploy supports.
2. The rendered objects keep their promises (docs/operations.md): the probe
   DaemonSet is on every node, in the node's network and PID namespaces, not
   privileged, with only the capabilities it needs, critical priority, health
   checks, resources, and the projected probemesh token; the coordinator runs
   as non-root with nothing added; the ClusterRole only reads (and creates
   TokenReviews); no Secret is rendered (no key material in git).
3. The Containerfile: its builder's Rust is the workspace's, every COPY
   source exists, it builds the three binaries, and its runtime packages are
   exactly those providing what the probe executes plus the listed libraries.
4. deploy/systemd/mesh-probe.service passes `systemd-analyze verify` and
   stays at an "OK" exposure (`systemd-analyze security`), where
   systemd-analyze exists; it says so when it is skipped.

Every failure names the object and the field. Exit 0 when all hold, 1 otherwise.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KUBERNETES = os.path.join(ROOT, "deploy", "kubernetes")
# The oldest release the deploy supports (the coordinator's Kubernetes client
# speaks 1.33's API) and the newest kubernetes-validate knows.
VALIDATE_VERSIONS = ["1.33.0", "1.37.0"]
NAMESPACE = "probemesh"

PROBE_CAPABILITIES = {"NET_RAW", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYS_NICE"}
READ_VERBS = {"get", "list", "watch"}
INVENTORY = {
    "": {"nodes", "pods", "services", "namespaces"},
    "discovery.k8s.io": {"endpointslices"},
    "scheduling.k8s.io": {"priorityclasses"},
}

# The Debian package of every program the probe executes. A program missing
# here fails the check: add its package here and to the Containerfile.
PROGRAM_PACKAGES = {
    "ip": "iproute2",
    "tc": "iproute2",
    "ss": "iproute2",
    "nstat": "iproute2",
    "iptables-save": "iptables",
    "ip6tables-save": "iptables",
    "nft": "nftables",
    "conntrack": "conntrack",
    "dig": "bind9-dnsutils",
}
# Runtime packages the binaries need besides the probe's programs.
LIBRARY_PACKAGES = {
    "libpcap0.8": "mesh-coordinator links libpcap to compile capture filters",
    "ca-certificates": "OTLP export to an https:// collector",
}
# What the builder must install to compile the workspace.
BUILD_PACKAGES = {"libpcap-dev"}
BINARIES = ["mesh-coordinator", "mesh-probe", "meshctl"]

failures = []


def fail(message):
    failures.append(message)


def expect(condition, message):
    if not condition:
        fail(message)
    return condition


def report(what, failures_before, passed):
    """One line per thing checked: what held, or how many checks failed."""
    failed = len(failures) - failures_before
    print(f"check-deploy: {what}: " + (f"{failed} FAILED (below)" if failed else passed))


def dig(obj, *path, default=None):
    """obj[path[0]][path[1]]..., or `default` where a step is missing."""
    for step in path:
        if isinstance(obj, dict) and step in obj:
            obj = obj[step]
        elif isinstance(obj, list) and isinstance(step, int) and step < len(obj):
            obj = obj[step]
        else:
            return default
    return obj


# ------------------------------------------------------------ kustomize --


def render(kubectl, directory):
    """The objects `kubectl kustomize DIRECTORY` renders, and its YAML text."""
    out = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"kubectl kustomize {os.path.relpath(directory, ROOT)} failed:\n{out.stderr}")
        return [], ""
    return [d for d in yaml.safe_load_all(out.stdout) if d], out.stdout


def validate(python, name, text, workdir):
    path = os.path.join(workdir, name.replace("/", "-") + ".yaml")
    with open(path, "w") as f:
        f.write(text)
    for version in VALIDATE_VERSIONS:
        out = subprocess.run(
            [python, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, path],
            capture_output=True,
            text=True,
        )
        expect(
            out.returncode == 0,
            f"{name}: kubernetes-validate --strict against {version} refuses it:\n{out.stdout}{out.stderr}",
        )


def find(objects, kind, name):
    for o in objects:
        if o.get("kind") == kind and dig(o, "metadata", "name") == name:
            return o
    fail(f"no {kind} {name} rendered")
    return None


def arg_value(args, flag):
    """The value after `flag` in a container's args, or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def check_health_and_resources(where, container):
    args = container.get("args", [])
    metrics = arg_value(args, "--metrics")
    port = metrics.rsplit(":", 1)[1] if metrics else None
    expect(port is not None, f"{where}: args have no --metrics ADDR:PORT (health is served there)")
    ports = {p.get("name"): str(p.get("containerPort")) for p in container.get("ports", [])}
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = dig(container, probe, "httpGet")
        if expect(get is not None, f"{where}.{probe}: missing (httpGet {path} on the metrics port)"):
            expect(get.get("path") == path, f"{where}.{probe}.httpGet.path is {get.get('path')!r}, not {path}")
            target = str(ports.get(get.get("port"), get.get("port")))
            expect(target == port, f"{where}.{probe}.httpGet.port {get.get('port')!r} is not the --metrics port {port}")
    for kind in ["requests", "limits"]:
        for resource in ["cpu", "memory"]:
            expect(
                dig(container, "resources", kind, resource) is not None,
                f"{where}.resources.{kind}.{resource} is not set",
            )


def mounted(container, path, writable):
    """Whether `path` is a volume mount of `container` (and writable, if asked)."""
    for m in container.get("volumeMounts", []):
        if m.get("mountPath") == path:
            return not (writable and m.get("readOnly"))
    return False


def check_probe(objects):
    ds = find(objects, "DaemonSet", "mesh-probe")
    if ds is None:
        return
    where = "DaemonSet mesh-probe"
    pod = dig(ds, "spec", "template", "spec", default={})
    expect(pod.get("hostNetwork") is True, f"{where}: spec.template.spec.hostNetwork is not true")
    expect(pod.get("hostPID") is True, f"{where}: spec.template.spec.hostPID is not true (setns via /proc/PID/ns/net)")
    expect(
        pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
        f"{where}: spec.template.spec.dnsPolicy is {pod.get('dnsPolicy')!r}, not ClusterFirstWithHostNet",
    )
    expect(
        pod.get("priorityClassName") == "system-node-critical",
        f"{where}: spec.template.spec.priorityClassName is {pod.get('priorityClassName')!r}, not system-node-critical",
    )
    expect(
        any(t.get("operator") == "Exists" and "key" not in t and "effect" not in t for t in pod.get("tolerations", [])),
        f"{where}: spec.template.spec.tolerations has no {{operator: Exists}} without key and effect (tolerate every taint)",
    )
    expect(
        pod.get("automountServiceAccountToken") is False,
        f"{where}: spec.template.spec.automountServiceAccountToken is not false (only the probemesh token)",
    )
    containers = pod.get("containers", [])
    expect(len(containers) == 1, f"{where}: {len(containers)} containers, expected mesh-probe alone")
    for c in containers:
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext", {})
        expect(sc.get("privileged") is not True, f"{cw}.securityContext.privileged is true")
        expect(sc.get("allowPrivilegeEscalation") is False, f"{cw}.securityContext.allowPrivilegeEscalation is not false")
        expect(sc.get("readOnlyRootFilesystem") is True, f"{cw}.securityContext.readOnlyRootFilesystem is not true")
        caps = sc.get("capabilities", {})
        expect(caps.get("drop") == ["ALL"], f"{cw}.securityContext.capabilities.drop is {caps.get('drop')!r}, not [ALL]")
        added = set(caps.get("add", []))
        expect(
            added <= PROBE_CAPABILITIES,
            f"{cw}.securityContext.capabilities.add has {sorted(added - PROBE_CAPABILITIES)} beyond {sorted(PROBE_CAPABILITIES)}",
        )
        expect(
            not any(a.startswith("CAP_") for a in added),
            f"{cw}.securityContext.capabilities.add spells {sorted(a for a in added if a.startswith('CAP_'))} with CAP_ "
            "(Kubernetes names them without it, and refuses CAP_SYS_ADMIN with allowPrivilegeEscalation: false)",
        )
        check_health_and_resources(cw, c)
        args = c.get("args", [])
        expect(
            arg_value(args, "--name") == "$(NODE_NAME)",
            f"{cw}.args: --name is {arg_value(args, '--name')!r}, not $(NODE_NAME)",
        )
        node_name = [e for e in c.get("env", []) if e.get("name") == "NODE_NAME"]
        expect(
            node_name and dig(node_name[0], "valueFrom", "fieldRef", "fieldPath") == "spec.nodeName",
            f"{cw}.env: NODE_NAME does not come from fieldRef spec.nodeName",
        )
        for flag in ["--tls-dir"]:
            path = arg_value(args, flag)
            expect(
                path and mounted(c, path, writable=True),
                f"{cw}: {flag} {path} is not a writable volume mount (the root filesystem is read-only)",
            )
        expect(mounted(c, "/tmp", writable=True), f"{cw}: /tmp is not a writable volume mount (capture files go there)")
        token_file = arg_value(args, "--kube-token-file") or ""
        token_dir, token_path = os.path.split(token_file)
        projected = [
            (v, s["serviceAccountToken"])
            for v in pod.get("volumes", [])
            for s in dig(v, "projected", "sources", default=[])
            if "serviceAccountToken" in s
        ]
        token = [
            (v, t)
            for v, t in projected
            if t.get("audience") == "probemesh"
            and any(m.get("name") == v.get("name") and m.get("mountPath") == token_dir for m in c.get("volumeMounts", []))
        ]
        if expect(
            token,
            f"{cw}: no projected serviceAccountToken with audience probemesh mounted at {token_dir!r} (--kube-token-file {token_file!r})",
        ):
            _, t = token[0]
            expect(t.get("path") == token_path, f"{cw}: the projected token's path is {t.get('path')!r}, not {token_path!r}")
            expect(
                t.get("expirationSeconds") == 3600,
                f"{cw}: the projected token's expirationSeconds is {t.get('expirationSeconds')!r}, not 3600",
            )


def check_coordinator(objects):
    deploy = find(objects, "Deployment", "mesh-coordinator")
    if deploy is None:
        return
    where = "Deployment mesh-coordinator"
    expect(dig(deploy, "spec", "replicas") == 1, f"{where}: spec.replicas is not 1")
    pod = dig(deploy, "spec", "template", "spec", default={})
    psc = pod.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True, f"{where}: spec.template.spec.securityContext.runAsNonRoot is not true")
    expect(psc.get("runAsUser") == 65532, f"{where}: spec.template.spec.securityContext.runAsUser is not 65532")
    expect(
        dig(psc, "seccompProfile", "type") == "RuntimeDefault",
        f"{where}: spec.template.spec.securityContext.seccompProfile.type is not RuntimeDefault",
    )
    expect(pod.get("serviceAccountName") == "mesh-coordinator", f"{where}: serviceAccountName is not mesh-coordinator")
    secrets = [dig(v, "secret", "secretName") for v in pod.get("volumes", []) if "secret" in v]
    expect(
        secrets == ["probemesh-coordinator-tls"],
        f"{where}: secret volumes are {secrets}, expected probemesh-coordinator-tls alone",
    )
    for c in pod.get("containers", []):
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext", {})
        expect(sc.get("allowPrivilegeEscalation") is False, f"{cw}.securityContext.allowPrivilegeEscalation is not false")
        expect(sc.get("readOnlyRootFilesystem") is True, f"{cw}.securityContext.readOnlyRootFilesystem is not true")
        caps = sc.get("capabilities", {})
        expect(caps.get("drop") == ["ALL"], f"{cw}.securityContext.capabilities.drop is {caps.get('drop')!r}, not [ALL]")
        expect(not caps.get("add"), f"{cw}.securityContext.capabilities.add is {caps.get('add')!r}: the coordinator needs none")
        check_health_and_resources(cw, c)
        store = arg_value(c.get("args", []), "--store")
        expect(
            store and mounted(c, store, writable=True),
            f"{cw}: --store {store} is not a writable volume mount (the root filesystem is read-only)",
        )
    service = find(objects, "Service", "mesh-coordinator")
    if service is not None:
        ports = {(p.get("port"), p.get("protocol", "TCP")) for p in dig(service, "spec", "ports", default=[])}
        for want in [(7443, "TCP"), (7443, "UDP")]:
            expect(want in ports, f"Service mesh-coordinator: no port {want[0]}/{want[1]} (gRPC, and the clock exchange)")
    find(objects, "PodDisruptionBudget", "mesh-coordinator")


def check_rbac(objects):
    role = find(objects, "ClusterRole", "probemesh-inventory")
    if role is not None:
        covered = {}
        for i, rule in enumerate(role.get("rules", [])):
            rw = f"ClusterRole probemesh-inventory rules[{i}]"
            expect("nonResourceURLs" not in rule, f"{rw}: nonResourceURLs")
            groups, resources, verbs = (set(rule.get(k, [])) for k in ("apiGroups", "resources", "verbs"))
            for field, values in [("apiGroups", groups), ("resources", resources), ("verbs", verbs)]:
                expect("*" not in values, f"{rw}.{field} has a wildcard")
            if resources == {"tokenreviews"}:
                expect(groups == {"authentication.k8s.io"}, f"{rw}: tokenreviews outside authentication.k8s.io")
                expect(verbs == {"create"}, f"{rw}.verbs on tokenreviews are {sorted(verbs)}, not [create]")
                covered[("authentication.k8s.io", "create")] = resources
                continue
            expect(
                verbs <= READ_VERBS,
                f"{rw}.verbs has {sorted(verbs - READ_VERBS)} on {sorted(resources)}: only get/list/watch (and create on tokenreviews)",
            )
            if verbs == READ_VERBS:
                for g in groups:
                    covered.setdefault((g, "read"), set()).update(resources)
        for group, resources in INVENTORY.items():
            missing = resources - covered.get((group, "read"), set())
            expect(not missing, f"ClusterRole probemesh-inventory: no get/list/watch on {sorted(missing)} in group {group!r}")
        expect(
            ("authentication.k8s.io", "create") in covered,
            "ClusterRole probemesh-inventory: no create on authentication.k8s.io tokenreviews",
        )
    binding = find(objects, "ClusterRoleBinding", "probemesh-inventory")
    if binding is not None:
        subjects = [(s.get("kind"), s.get("namespace"), s.get("name")) for s in binding.get("subjects", [])]
        expect(
            subjects == [("ServiceAccount", NAMESPACE, "mesh-coordinator")],
            f"ClusterRoleBinding probemesh-inventory binds {subjects}, not the mesh-coordinator ServiceAccount alone",
        )
        expect(
            dig(binding, "roleRef", "name") == "probemesh-inventory",
            "ClusterRoleBinding probemesh-inventory: roleRef is not ClusterRole probemesh-inventory",
        )


def check_all_objects(name, objects):
    namespace = find(objects, "Namespace", NAMESPACE)
    expect(
        namespace is None or dig(namespace, "metadata", "labels", "pod-security.kubernetes.io/enforce") == "privileged",
        f"{name}: Namespace {NAMESPACE} is not labelled pod-security.kubernetes.io/enforce: privileged (the probe cannot run under baseline)",
    )
    for o in objects:
        what = f"{name}: {o.get('kind')} {dig(o, 'metadata', 'name')}"
        expect(o.get("kind") != "Secret", f"{what}: a Secret is rendered (key material stays out of git)")
        expect(
            dig(o, "metadata", "labels", "app.kubernetes.io/part-of") == "probemesh",
            f"{what}: metadata.labels has no app.kubernetes.io/part-of: probemesh",
        )
        if o.get("kind") not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            expect(
                dig(o, "metadata", "namespace") == NAMESPACE,
                f"{what}: metadata.namespace is {dig(o, 'metadata', 'namespace')!r}, not {NAMESPACE}",
            )
        if o.get("kind") in ("Deployment", "DaemonSet"):
            expect(
                dig(o, "spec", "template", "metadata", "labels", "app.kubernetes.io/name") == dig(o, "metadata", "name"),
                f"{what}: the pod template has no app.kubernetes.io/name label naming it",
            )


def check_args_parse(objects):
    """Every container's command line is one its binary accepts: the built
    binary parses the manifest's arguments (with --version last, so clap
    checks every flag and value, then stops)."""
    for o in objects:
        if o.get("kind") not in ("Deployment", "DaemonSet"):
            continue
        for c in dig(o, "spec", "template", "spec", "containers", default=[]):
            command = c.get("command") or []
            if not command:
                continue
            binary = os.path.join(ROOT, "target", "debug", os.path.basename(command[0]))
            if not os.path.exists(binary):
                fail(f"{o['kind']}/{o['metadata']['name']}: {binary} is not built (run cargo build --workspace --bins first)")
                continue
            out = subprocess.run([binary, *command[1:], *c.get("args", []), "--version"], capture_output=True, text=True)
            expect(
                out.returncode == 0,
                f"{o['kind']}/{o['metadata']['name']} container {c.get('name')}: {os.path.basename(binary)} refuses the manifest's arguments: {out.stderr.strip()}",
            )


def check_kubernetes(kubectl, python, workdir):
    overlays = os.path.join(KUBERNETES, "overlays")
    targets = [KUBERNETES] + sorted(
        os.path.join(overlays, d) for d in os.listdir(overlays) if os.path.isdir(os.path.join(overlays, d))
    )
    for directory in targets:
        name = os.path.relpath(directory, ROOT)
        before = len(failures)
        objects, text = render(kubectl, directory)
        if not objects:
            continue
        validate(python, name, text, workdir)
        check_all_objects(name, objects)
        check_probe(objects)
        check_coordinator(objects)
        check_rbac(objects)
        check_args_parse(objects)
        report(name, before, f"{len(objects)} objects render, validate against {', '.join(VALIDATE_VERSIONS)} and keep their promises")


# ---------------------------------------------------------- Containerfile --

# `#[cfg(test)] mod x { ... }` to the end of the file: inline tests sit last.
INLINE_TESTS = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*mod\s+\w+\s*\{.*", re.S | re.M)
EXEC = re.compile(r'(?:\bcommand|Command::new)\(\s*"([^"]+)"')


def probe_programs():
    """Programs the probe's non-test code executes, with where."""
    found = {}
    for d, _, files in os.walk(os.path.join(ROOT, "probe", "src")):
        for f in files:
            path = os.path.join(d, f)
            if not f.endswith(".rs") or f in ("tests.rs", "testing.rs") or "/tests/" in path:
                continue
            with open(path) as fh:
                text = INLINE_TESTS.sub("", fh.read())
            for program in EXEC.findall(text):
                found.setdefault(program, os.path.relpath(path, ROOT))
    return found


def apt_packages(run_line):
    """Package names of an `apt-get install` in a RUN instruction."""
    m = re.search(r"apt-get install ([^&;]*)", run_line)
    if not m:
        return set()
    return {w for w in m.group(1).split() if not w.startswith("-")}


def check_containerfile():
    before = len(failures)
    path = os.path.join(ROOT, "Containerfile")
    if not expect(os.path.exists(path), "Containerfile: missing at the repository's root"):
        return
    with open(path) as f:
        lines = f.read().replace("\\\n", " ").splitlines()
    stages = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append({"from": rest.split()[0], "runs": [], "copies": [], "user": None})
        elif stages and word.upper() == "RUN":
            stages[-1]["runs"].append(rest)
        elif stages and word.upper() == "COPY":
            stages[-1]["copies"].append(rest.split())
        elif stages and word.upper() == "USER":
            stages[-1]["user"] = rest.strip()
    if not expect(len(stages) == 2, f"Containerfile: {len(stages)} stages, expected a builder and a runtime"):
        return
    builder, runtime = stages

    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        rust = re.search(r'^rust-version\s*=\s*"([^"]+)"', f.read(), re.M).group(1)
    expect(
        builder["from"] == f"rust:{rust}-bookworm",
        f"Containerfile: the builder is {builder['from']}, not rust:{rust}-bookworm (the workspace's rust-version)",
    )
    expect(runtime["from"] == "debian:bookworm-slim", f"Containerfile: the runtime is {runtime['from']}, not debian:bookworm-slim")

    build_packages = set().union(*(apt_packages(r) for r in builder["runs"]))
    expect(
        BUILD_PACKAGES <= build_packages,
        f"Containerfile: the builder installs {sorted(build_packages)}, missing {sorted(BUILD_PACKAGES - build_packages)}",
    )
    with open(os.path.join(ROOT, "scripts", "deps.sh")) as f:
        deps = f.read()
    for p in sorted(build_packages):
        expect(
            re.search(rf"(^|\s){re.escape(p)}(\s|$)", deps, re.M),
            f"Containerfile: the builder installs {p}, which scripts/deps.sh does not: the test build would not show the image builds",
        )
    build = " ".join(r for r in builder["runs"] if "cargo build" in r)
    expect("--release" in build and "--locked" in build, "Containerfile: no `cargo build --release --locked`")
    for b in BINARIES:
        expect(f"-p {b}" in build, f"Containerfile: cargo build does not build {b} (-p {b})")

    for copy in builder["copies"]:
        sources = [w for w in copy[:-1] if not w.startswith("--")]
        for s in sources:
            expect(os.path.exists(os.path.join(ROOT, s)), f"Containerfile: COPY {s}: no such path in the repository")
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        members = re.search(r"members\s*=\s*\[(.*?)\]", f.read(), re.S).group(1)
    copied = {w.rstrip("/") for c in builder["copies"] for w in c[:-1]}
    for member in re.findall(r'"([^"]+)"', members):
        top = member.split("/")[0]
        expect(top in copied, f"Containerfile: workspace member {member} is not copied into the builder (COPY {top} {top})")

    shipped = [w for c in runtime["copies"] if any(x.startswith("--from=") for x in c) for w in c[:-1] if not w.startswith("--")]
    for b in BINARIES:
        expect(
            f"/src/target/release/{b}" in shipped,
            f"Containerfile: the runtime does not copy {b} from the builder's target/release",
        )

    installed = set().union(*(apt_packages(r) for r in runtime["runs"]))
    programs = probe_programs()
    needed = {}
    for program, where in sorted(programs.items()):
        package = PROGRAM_PACKAGES.get(program)
        if expect(
            package is not None,
            f"the probe runs {program} ({where}): add its Debian package to PROGRAM_PACKAGES in scripts/check-deploy.py and to the Containerfile",
        ):
            needed.setdefault(package, []).append(program)
    for package, programs_of in sorted(needed.items()):
        expect(
            package in installed,
            f"Containerfile: the runtime lacks {package}, which provides {', '.join(programs_of)} (the probe runs it)",
        )
    extra = installed - set(needed) - set(LIBRARY_PACKAGES)
    expect(not extra, f"Containerfile: the runtime installs {sorted(extra)}, which nothing needs")
    for package, why in LIBRARY_PACKAGES.items():
        expect(package in installed, f"Containerfile: the runtime lacks {package} ({why})")
    expect(
        runtime["user"] is not None and runtime["user"].split(":")[0] not in ("0", "root"),
        f"Containerfile: the runtime's USER is {runtime['user']!r}: run unprivileged by default",
    )
    report(
        "Containerfile",
        before,
        f"builder rust:{rust}, COPY sources exist, runtime packages {sorted(installed)} match the probe's "
        f"programs {sorted(programs)} (a static check: no container engine is used)",
    )


# ---------------------------------------------------------------- systemd --


def check_systemd(workdir):
    unit = os.path.join(ROOT, "deploy", "systemd", "mesh-probe.service")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("check-deploy: SKIPPED systemd-analyze verify deploy/systemd/mesh-probe.service: systemd-analyze is not installed")
        return
    with open(unit) as f:
        text = f.read()
    exec_start = re.search(r"^ExecStart=(\S+)", text, re.M).group(1)
    # verify checks that ExecStart is executable: a root holding the system's
    # units, this unit and a stand-in at ExecStart's path.
    root = os.path.join(workdir, "systemd-root")
    shutil.rmtree(root, ignore_errors=True)
    system_units = next(p for p in ("/usr/lib/systemd/system", "/lib/systemd/system") if os.path.isdir(p))
    shutil.copytree(system_units, os.path.join(root, "usr/lib/systemd/system"), symlinks=True)
    os.makedirs(os.path.join(root, "etc/systemd/system"))
    installed = os.path.join(root, "etc/systemd/system/mesh-probe.service")
    shutil.copy(unit, installed)
    stand_in = os.path.join(root, exec_start.lstrip("/"))
    os.makedirs(os.path.dirname(stand_in), exist_ok=True)
    with open(stand_in, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(stand_in, 0o755)
    before = len(failures)
    out = subprocess.run([analyze, "verify", f"--root={root}", installed], capture_output=True, text=True)
    expect(
        out.returncode == 0 and not out.stderr.strip(),
        f"systemd-analyze verify deploy/systemd/mesh-probe.service:\n{out.stdout}{out.stderr}",
    )
    out = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=40", f"--root={root}", installed],
        capture_output=True,
        text=True,
    )
    level = re.search(r"Overall exposure level for \S+: (\S+ \S+)", out.stdout + out.stderr)
    expect(
        out.returncode == 0,
        f"systemd-analyze security: deploy/systemd/mesh-probe.service exposure {level.group(1) if level else '?'} is above 4.0 (OK):\n{out.stdout[-3000:]}{out.stderr}",
    )
    report(
        "deploy/systemd/mesh-probe.service",
        before,
        f"systemd-analyze verify passes, exposure {level.group(1) if level else '?'}",
    )


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check-deploy.py KUBECTL (run scripts/check-deploy.sh)")
    kubectl = sys.argv[1]
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.join(ROOT, "target"), prefix="check-deploy-") as workdir:
        check_kubernetes(kubectl, sys.executable, workdir)
        check_containerfile()
        check_systemd(workdir)
    if failures:
        for f in failures:
            print(f"check-deploy: FAIL {f}", file=sys.stderr)
        sys.exit(f"check-deploy: {len(failures)} deploy checks failed")
    print("check-deploy: all deploy checks pass")


if __name__ == "__main__":
    main()
