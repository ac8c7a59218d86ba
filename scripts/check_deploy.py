"""Our own rules for the deployment files, beyond what hadolint and the Compose schema check.

Run by scripts/check_deploy.sh in its venv (dockerfile-parse; ruamel.yaml comes with
check-jsonschema):  python check_deploy.py dockerfile|compose ROOT
Prints one line per problem and exits 1 when there is any.
"""

import fnmatch
import os
import re
import sys

problems = []


def problem(msg):
    problems.append(msg)


# --- Dockerfile ---------------------------------------------------------------------------

def dockerignore_patterns(root):
    path = os.path.join(root, ".dockerignore")
    if not os.path.exists(path):
        return []
    lines = [line.strip() for line in open(path, encoding="utf-8")]
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def ignored(path, patterns):
    """Whether the build context leaves `path` out (the subset of .dockerignore we use:
    plain paths, `*`, and a leading `**/`; no `!` exceptions)."""
    parts = path.split("/")
    for pattern in patterns:
        if pattern.startswith("!"):
            problem(f".dockerignore: exceptions ({pattern}) are not understood by this check")
            continue
        anywhere = pattern.startswith("**/")
        pat = pattern[3:] if anywhere else pattern
        depth = pat.count("/") + 1
        starts = range(len(parts)) if anywhere else [0]
        for start in starts:
            for end in range(start + depth, len(parts) + 1):
                if end - start == depth and fnmatch.fnmatchcase("/".join(parts[start:end]), pat):
                    return pattern
    return None


def lib_sh_pins(root):
    pins = {}
    for line in open(os.path.join(root, "scripts/lib.sh"), encoding="utf-8"):
        m = re.match(r"^([A-Z_]+_VERSION)=(\S+)$", line.strip())
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def check_dockerfile(root):
    from dockerfile_parse import DockerfileParser

    path = os.path.join(root, "deploy/Dockerfile")
    parser = DockerfileParser(path)
    items = [i for i in parser.structure if i["instruction"] != "COMMENT"]
    patterns = dockerignore_patterns(root)

    # Stages and base images.
    stages = []  # (alias, index of FROM)
    for n, item in enumerate(items):
        if item["instruction"] != "FROM":
            continue
        words = item["value"].split()
        image = next(w for w in words if not w.startswith("--"))
        alias = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else None
        if image not in [a for a, _ in stages]:
            name = image.split("@")[0]
            if "@sha256:" not in image and (":" not in name.rsplit("/", 1)[-1] or name.endswith(":latest")):
                problem(f"line {item['startline'] + 1}: base image {image} is not pinned to a tag")
        stages.append((alias, n))
    if not stages:
        problem("no FROM")
        return
    final_start = stages[-1][1]
    final = items[final_start:]

    # COPY --from must name an earlier stage (or a tagged image).
    seen = set()
    for n, item in enumerate(items):
        if item["instruction"] == "FROM":
            words = item["value"].split()
            if len(words) >= 3 and words[-2].upper() == "AS":
                seen.add(words[-1])
        if item["instruction"] not in ("COPY", "ADD"):
            continue
        words = item["value"].split()
        flags = [w for w in words if w.startswith("--")]
        args = [w for w in words if not w.startswith("--")]
        src_from = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        if src_from is not None:
            if src_from not in seen and (":" not in src_from or src_from.endswith(":latest")):
                problem(f"line {item['startline'] + 1}: COPY --from={src_from} names no earlier stage")
            continue
        # From the build context: the sources must exist and not be left out by .dockerignore.
        for src in args[:-1]:
            if src == ".":
                continue
            if not os.path.exists(os.path.join(root, src)):
                problem(f"line {item['startline'] + 1}: {item['instruction']} source {src} does not exist")
            elif ignored(src, patterns):
                problem(f"line {item['startline'] + 1}: {src} is left out of the build context by .dockerignore ({ignored(src, patterns)})")
            else:
                mode = os.stat(os.path.join(root, src)).st_mode
                dest = args[-1]
                if dest.startswith("/usr/local/bin/") and not mode & 0o111:
                    problem(f"line {item['startline'] + 1}: {src} goes to {dest} but is not executable")

    # Repository scripts that RUN executes must exist.
    for item in items:
        if item["instruction"] != "RUN":
            continue
        for script in re.findall(r"(?<![\w/.-])((?:scripts|deploy)/[\w./-]+\.(?:sh|py))", item["value"]):
            if os.path.exists(os.path.join(root, script)):
                if ignored(script, patterns):
                    problem(f"line {item['startline'] + 1}: RUN uses {script}, which .dockerignore leaves out")
            else:
                problem(f"line {item['startline'] + 1}: RUN uses {script}, which does not exist")

    # Files the Rust code compiles in (include_str!/include_bytes!, e.g. deploy/install.sh)
    # must be in the build context.
    for crate_dir, _, files in os.walk(root):
        rel_dir = os.path.relpath(crate_dir, root)
        if rel_dir.split(os.sep)[0] in ("target", ".git", "node_modules", "end2end", "dist", "data"):
            continue
        for name in files:
            if not name.endswith(".rs"):
                continue
            source = os.path.join(crate_dir, name)
            for included in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', open(source, encoding="utf-8").read()):
                target = os.path.relpath(os.path.normpath(os.path.join(crate_dir, included)), root)
                if ignored(target, patterns):
                    problem(f"{os.path.relpath(source, root)} compiles in {target}, which .dockerignore leaves out")

    # The runtime stage: non-root user last, a health check, the server's settings.
    users = [i for i in final if i["instruction"] == "USER"]
    if not users:
        problem("the final stage sets no USER: the server would run as root")
    else:
        user = users[-1]["value"].split(":")[0].strip()
        if user in ("root", "0"):
            problem(f"the final stage's last USER is {user}")
        later = [i for i in final if i["startline"] > users[-1]["startline"] and i["instruction"] in ("RUN", "COPY", "ADD")]
        if later:
            problem(f"line {later[0]['startline'] + 1}: {later[0]['instruction']} after the last USER (keep USER last)")
    checks = [i for i in final if i["instruction"] == "HEALTHCHECK"]
    if not checks or checks[-1]["value"].strip().upper() == "NONE":
        problem("the final stage has no HEALTHCHECK")

    env = {}
    for item in final:
        if item["instruction"] == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", item["value"]):
                env[key] = value
    for key in ("AIEDGE_BIND", "AIEDGE_DATA_DIR", "AIEDGE_AGENTS_DIR", "LEPTOS_SITE_ROOT"):
        if key not in env:
            problem(f"the final stage does not set {key}")
    exposed = [p.split("/")[0] for i in final if i["instruction"] == "EXPOSE" for p in i["value"].split()]
    port = env.get("AIEDGE_BIND", "").rsplit(":", 1)[-1]
    if port and port not in exposed:
        problem(f"AIEDGE_BIND listens on {port} but EXPOSE says {exposed}")
    volumes = " ".join(i["value"] for i in final if i["instruction"] == "VOLUME")
    if env.get("AIEDGE_DATA_DIR") and env["AIEDGE_DATA_DIR"] not in volumes:
        problem(f"AIEDGE_DATA_DIR {env.get('AIEDGE_DATA_DIR')} is not a VOLUME")

    # The tool versions must be the ones scripts/lib.sh installs for CI and the quickstart.
    pins = lib_sh_pins(root)
    for item in items:
        if item["instruction"] == "ARG" and "=" in item["value"]:
            key, value = item["value"].split("=", 1)
            if key in pins and pins[key] != value.strip():
                problem(f"ARG {key}={value} but scripts/lib.sh pins {pins[key]}")
            if key in pins:
                pins[key] = None  # seen
    for key in ("CARGO_LEPTOS_VERSION", "WASM_BINDGEN_VERSION"):
        if pins.get(key) is not None:
            problem(f"the Dockerfile has no ARG {key} (scripts/lib.sh pins {pins[key]})")


# --- compose ------------------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET_KEY = re.compile(r"PASSWORD|PASS$|SECRET|TOKEN|_URL$")


def check_compose(root):
    from ruamel.yaml import YAML

    path = os.path.join(root, "deploy/compose.yaml")
    text = open(path, encoding="utf-8").read()
    doc = YAML(typ="safe").load(text)
    services = doc.get("services", {})

    # Every variable the file uses is documented in the example env file.
    example = open(os.path.join(root, "deploy/compose.env.example"), encoding="utf-8").read()
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, re.M))
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for name, _, _ in INTERPOLATION.findall(code):
        if name not in documented:
            problem(f"compose.yaml uses ${{{name}}}, which compose.env.example does not list")
    if re.search(r"\$[A-Za-z_]", code):
        problem("compose.yaml uses a bare $VAR: write ${VAR:?…} or ${VAR:-default}")

    for sname, service in services.items():
        # No secret written into the file: passwords, tokens and URLs (which may carry
        # credentials) come from the environment.
        environment = service.get("environment", {}) or {}
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) if "=" in e else (e, None) for e in environment)
        for key, value in environment.items():
            if value is None or not SECRET_KEY.search(key):
                continue
            value = str(value)
            has_credentials = re.search(r"://[^/@]*:[^/@]*@", value)
            if ("PASS" in key or "SECRET" in key or "TOKEN" in key) and "${" not in value:
                problem(f"{sname}: {key} is written into compose.yaml; take it from the environment")
            elif has_credentials and "${" not in has_credentials.group(0):
                problem(f"{sname}: {key} carries a literal password")

        # Images pinned to a tag.
        image = service.get("image")
        if image and "build" not in service and (":" not in image or image.endswith(":latest")):
            problem(f"{sname}: image {image} is not pinned to a tag")

        # depends_on names services that exist, and waits only for health they report.
        depends = service.get("depends_on", {}) or {}
        if isinstance(depends, list):
            depends = {d: {} for d in depends}
        for dep, cond in depends.items():
            if dep not in services:
                problem(f"{sname}: depends_on {dep}, which is not a service")
            elif (cond or {}).get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                problem(f"{sname}: waits for {dep} to be healthy, but {dep} has no healthcheck")

        # Named volumes are declared.
        for volume in service.get("volumes", []) or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/", "~", "$")) and source not in (doc.get("volumes") or {}):
                problem(f"{sname}: volume {source} is not declared under volumes")

        # The build context and Dockerfile exist.
        build = service.get("build")
        if build:
            context = build if isinstance(build, str) else build.get("context", ".")
            context = os.path.normpath(os.path.join(root, "deploy", context))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.exists(os.path.join(context, dockerfile)):
                problem(f"{sname}: build file {os.path.join(context, dockerfile)} does not exist")

    server = services.get("server", {})
    env = server.get("environment", {}) or {}
    for key in ("AIEDGE_DATABASE_URL", "AIEDGE_AMQP_URL", "AIEDGE_AMQP_MANAGEMENT_URL", "AIEDGE_PUBLIC_URL", "AIEDGE_AGENT_AMQP_URL"):
        if key not in env:
            problem(f"server: {key} is not set")
    rabbit = services.get("rabbitmq", {}).get("image", "")
    if "management" not in rabbit:
        problem(f"rabbitmq: {rabbit} has no management plugin, which the server needs for broker users")


def main():
    what, root = sys.argv[1], sys.argv[2]
    {"dockerfile": check_dockerfile, "compose": check_compose}[what](root)
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
