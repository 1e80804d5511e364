"""Structural checks of the Dockerfile and deploy/compose.yaml, which cannot be
built or run here (no registry for base images). Prints, as JSON, how the
image runs its server (user, environment, command) so that
scripts/test-packages can run the same binary the same way.

usage: container_check.py ROOT
"""

import json
import re
import shlex
import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1])
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


# --- Dockerfile -------------------------------------------------------------
text = (root / "Dockerfile").read_text()
text = re.sub(r"\\\n", " ", text)  # continuation lines
instructions = []
for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    word, _, rest = line.partition(" ")
    instructions.append((word.upper(), rest.strip()))

stages = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
check(len(stages) >= 2, "the Dockerfile is not multi-stage")
runtime = instructions[stages[-1]:] if stages else []
check(any(w == "COPY" and "--from=" in r for w, r in runtime), "the runtime stage copies nothing from the build stage")
check("slim" in runtime[0][1] if runtime else False, "the runtime base is not a slim image")

users = [r for w, r in runtime if w == "USER"]
user = users[-1] if users else "root"
uid = user.split(":")[0]
check(uid not in ("root", "0"), f"the image runs as {user}")
check(uid.isdigit(), "USER should be numeric (Kubernetes runAsNonRoot can only verify a number)")

env = {}
for w, r in runtime:
    if w == "ENV":
        for key, value in re.findall(r"(\w+)=(\S+)", r):
            env[key] = value

health = [r for w, r in runtime if w == "HEALTHCHECK"]
check(len(health) == 1 and "/healthz" in health[0], "no HEALTHCHECK on /healthz")
signals = [r for w, r in runtime if w == "STOPSIGNAL"]
check(signals == ["SIGTERM"], "STOPSIGNAL is not SIGTERM")
exposed = [r for w, r in runtime if w == "EXPOSE"]
listen_port = env.get("SWITCHBOARD_LISTEN", "127.0.0.1:8080").rsplit(":", 1)[1]
check(exposed == [listen_port], f"EXPOSE {exposed} is not the listen port {listen_port}")
check(env.get("SWITCHBOARD_LISTEN", "").startswith("0.0.0.0:"), "the container must listen on 0.0.0.0")


def exec_form(word):
    values = [r for w, r in runtime if w == word]
    check(len(values) == 1, f"one {word} expected")
    try:
        return json.loads(values[-1])
    except (IndexError, ValueError):
        problems.append(f"{word} is not in exec (JSON) form")
        return []


command = exec_form("ENTRYPOINT") + exec_form("CMD")
check(command[:2] == ["/usr/bin/switchboard", "serve"], f"the image does not run switchboard serve: {command}")
healthcheck_cmd = json.loads(health[0].split("CMD", 1)[1]) if health else []

# --- compose.yaml -----------------------------------------------------------
compose = yaml.safe_load((root / "deploy/compose.yaml").read_text())
services = compose["services"]
nodes = [name for name, s in services.items() if s.get("image", "").startswith("switchboard")]
check(len(nodes) == 2, f"two switchboard nodes expected, found {nodes}")
check("redis" in services and services["redis"]["image"].startswith("redis"), "no redis service")
for name in nodes:
    node_env = services[name].get("environment", {})
    redis = node_env.get("SWITCHBOARD_REDIS", "")
    check(redis.startswith("redis://redis:"), f"{name} does not use the redis service: {redis!r}")
    check(services[name].get("build", {}).get("dockerfile") == "Dockerfile", f"{name} is not built from the Dockerfile")
    check(node_env.get("SWITCHBOARD_LISTEN", "").endswith(":" + listen_port), f"{name} listens elsewhere")
nginx = services.get("nginx", {})
check(nginx.get("image", "").startswith("nginx"), "no nginx service")
mounts = [v.split(":")[0] for v in nginx.get("volumes", [])]
check(mounts == ["./nginx.conf"], f"nginx mounts {mounts}")
conf = (root / "deploy/nginx.conf").read_text()
upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+);", conf, re.M)
check(sorted(h for h, _ in upstreams) == sorted(nodes), f"nginx upstream {upstreams} is not the two nodes")
check(all(p == listen_port for _, p in upstreams), "nginx upstream ports differ from the nodes' port")
for needed in ["proxy_set_header Upgrade $http_upgrade", "proxy_buffering off", "proxy_read_timeout"]:
    check(needed in conf, f"nginx.conf lacks `{needed}` (docs/deploy.md)")

if problems:
    for p in problems:
        print("container check: " + p, file=sys.stderr)
    sys.exit(1)
print(json.dumps({"uid": uid, "user": user, "env": env, "command": command, "healthcheck": healthcheck_cmd}))
