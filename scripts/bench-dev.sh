#!/usr/bin/env bash
# Benchmark of the edit loop (issue 17): edit → first response served by the new version
# through the router, with `dronectl dev`, for a one-line handler change
#   1. in a generated `rust-http` service (`dronectl new app` + `new service --template rust-http`),
#   2. in one reference-app service (`ingestion`, its /api/probe handler),
# ITERATIONS times each (default 10), median and max, with where the time goes (watch
# latency, compile, image, swap). In the same run, for the generated service, the
# alternatives a user would reach for on the same change (ALT_ITERATIONS times each,
# default 3):
#   a. `dronectl build <svc> && dronectl deploy <svc> --rolling`,
#   b. plain `cargo build --release` (static) + `docker build` (FROM scratch) + container
#      replace (`docker rm -f` + `docker run`), measured on the container's own port.
# Results as a Markdown table on stdout; raw timings in $OUT (default target/bench-dev), and
# every `dev` iteration's events with their arrival time after the save in
# $OUT/events-<label>.jsonl. Swap → served is split into: revision (build finished → the
# `swapping` event), create (→ the engine's first `scaling` event: the new replica's container
# created) and start/ready/routed (→ the first response of the new version through the router).
# Export DRONECTL=… to measure another dronectl binary.
#
#   scripts/bench-dev.sh                  # both apps
#   SKIP_REFERENCE=1 scripts/bench-dev.sh # the generated app only
#   SKIP_GENERATED=1 scripts/bench-dev.sh # the reference app only
#   SKIP_BUILD_DEPLOY=1 / SKIP_PLAIN=1     # leave out an alternative (ALT_ITERATIONS=0: both)
#
# CPU time (user+sys, s) is reported beside wall time: for `dronectl dev` that of the dev
# process and its children (cargo, rustc, the linker) per iteration, from /proc; for the
# plain alternative that of `cargo build` and the docker CLI. The Docker daemon's own CPU
# (image import, container start) is in neither.
#
# Needs: docker, curl, python3; the reference app needs the redis image
# (scripts/infra-images.sh). Everything it creates has a unique name and is removed at the end.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
DRONECTL="${DRONECTL:-$CARGO_TARGET_DIR/debug/dronectl}"
if [[ ! -x "$DRONECTL" ]]; then
  (cd "$root" && cargo build -q --bin dronectl)
fi
OUT="${OUT:-$CARGO_TARGET_DIR/bench-dev}"
mkdir -p "$OUT"
export DRONECTL OUT ROOT="$root"
export ITERATIONS="${ITERATIONS:-10}" ALT_ITERATIONS="${ALT_ITERATIONS:-3}"
export SKIP_REFERENCE="${SKIP_REFERENCE:-}" SKIP_GENERATED="${SKIP_GENERATED:-}"
export SKIP_BUILD_DEPLOY="${SKIP_BUILD_DEPLOY:-}" SKIP_PLAIN="${SKIP_PLAIN:-}"

exec python3 - <<'PY'
import json, os, re, resource, shutil, signal, statistics, subprocess, sys, tempfile, threading, time, urllib.request

# Ctrl-C or a TERM (also when started in the background, where SIGINT is ignored) still
# runs the clean-up at the end.
def _interrupt(*_):
    raise KeyboardInterrupt


signal.signal(signal.SIGINT, _interrupt)
signal.signal(signal.SIGTERM, _interrupt)

DRONECTL = os.environ["DRONECTL"]
OUT = os.environ["OUT"]
ROOT = os.environ["ROOT"]
N = int(os.environ["ITERATIONS"])
ALT_N = int(os.environ["ALT_ITERATIONS"])
work = tempfile.mkdtemp(prefix="bench-dev-")
state = os.path.join(work, "state")
env = dict(os.environ, DRONECTL_STATE_DIR=state, NO_COLOR="1")
env.pop("CI", None)
tag = f"{os.getpid() % 4096:x}{int(time.time()) % 65536:x}"
cleanups = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(args, cwd, check=True):
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except Exception as e:  # refused, reset, HTTP errors: not served
        return None, str(e)


def wait_served(url, marker, timeout=900):
    """Polls `url` every 20 ms until its body contains `marker`; returns the time."""
    end = time.time() + timeout
    while time.time() < end:
        status, body = get(url)
        if status == 200 and marker in body:
            return time.time()
        time.sleep(0.02)
    raise SystemExit(f"{url} never served {marker!r}")


TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """User+sys CPU seconds of `pid` and its waited-for children (cargo, rustc, ld)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def edit(path, old, new):
    """An editor's atomic save: write a temporary file beside it, rename it over."""
    text = open(path).read()
    assert old in text, f"{path} has no {old!r}"
    tmp = path + ".bench-save"
    with open(tmp, "w") as f:
        f.write(text.replace(old, new, 1))
    os.replace(tmp, path)


class Dev:
    """A running `dronectl -o json dev --no-logs`, its events timestamped on arrival."""

    def __init__(self, app_dir, services):
        self.proc = subprocess.Popen([DRONECTL, "-o", "json", "dev", "--no-logs", *services],
                                     cwd=app_dir, env=env, stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(OUT, "dev-stderr.log"), "a"), text=True)
        self.events = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append((time.time(), e))
                self.cond.notify_all()

    def wait(self, pred, since=0, timeout=1800):
        end = time.time() + timeout
        with self.cond:
            while True:
                for i in range(since, len(self.events)):
                    if pred(self.events[i][1]):
                        return i, self.events[i]
                left = end - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    raise SystemExit(f"dev: no matching event; last: {self.events[-5:]}")
                self.cond.wait(left)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=120)


def dev_what(what):
    return lambda e: e.get("event") == "dev" and e.get("what") == what


def bench_dev(app_dir, service, url_path, path, make_old_new, label):
    dev = Dev(app_dir, [service])
    _, (t, e) = dev.wait(dev_what("watching"))
    log(f"{label}: dev is watching ({e['message']})")
    entry = e["message"].split()[0]
    url = entry + url_path
    rows = []
    for i in range(1, N + 1):
        old, new, marker = make_old_new(i)
        mark = len(dev.events)
        cpu0 = proc_cpu(dev.proc.pid)
        t0 = time.time()
        edit(path, old, new)
        served = wait_served(url, marker)
        _, (t_live, _) = dev.wait(dev_what("live"), since=mark)
        cpu = proc_cpu(dev.proc.pid) - cpu0
        ev = dev.events[mark:]

        def first(pred):
            return next((t for t, e in ev if pred(e)), None)

        t_changed = first(dev_what("changed"))
        t_build = first(dev_what("build_started"))
        t_built = first(dev_what("build_finished"))
        compile_ms = next((e.get("elapsed_ms") for _, e in ev if e.get("event") == "build_step"
                           and e.get("stage") == "compile" and e.get("status") == "finished"), None)
        image_ms = next((e.get("elapsed_ms") for _, e in ev if e.get("event") == "build_step"
                         and e.get("stage") == "image" and e.get("status") == "finished"), None)
        t_swapping = first(dev_what("swapping")) or t_built or t0
        # The engine's first `scaling` event of the swap: the new replica's container has
        # been created and is starting; from there to the first response of the new version
        # it starts, becomes ready and gets the traffic (the engine reports the step after
        # the router already sends to it, so that event would come too late).
        t_scaling = first(lambda e: e.get("event") == "rollout" and e.get("what") == "scaling")
        t_scaling = min(t_scaling or served, served)
        with open(os.path.join(OUT, f"events-{label}.jsonl"), "a") as f:
            for t, e in ev:
                f.write(json.dumps(dict(iteration=i, t=round(t - t0, 3), **e)) + "\n")
        row = dict(iteration=i, total=served - t0, watch=(t_changed or t0) - t0,
                   settle=(t_build or t0) - (t_changed or t0),
                   build=(t_built or t0) - (t_build or t0),
                   compile=(compile_ms or 0) / 1000, image=(image_ms or 0) / 1000,
                   swap_to_served=served - (t_built or t0), swap_to_live=t_live - (t_built or t0),
                   revision=t_swapping - (t_built or t0), create=t_scaling - t_swapping,
                   start_ready=served - t_scaling,
                   cpu=cpu)
        rows.append(row)
        log(f"{label} #{i}: {row['total']:.2f}s (watch {row['watch']:.2f}, settle {row['settle']:.2f}, "
            f"build {row['build']:.2f} = compile {row['compile']:.2f} + image {row['image']:.2f} + rest, "
            f"swap→served {row['swap_to_served']:.2f} = revision {row['revision']:.2f} + create "
            f"{row['create']:.2f} + start/ready/routed {row['start_ready']:.2f}; CPU {cpu:.2f}s)")
        time.sleep(0.5)
    dev.stop()
    return rows, url


def bench_build_deploy(app_dir, service, url, path, make_old_new, label):
    rows = []
    for i in range(1, ALT_N + 1):
        old, new, marker = make_old_new(100 + i)
        t0 = time.time()
        edit(path, old, new)
        run([DRONECTL, "build", service], app_dir)
        t_built = time.time()
        run([DRONECTL, "deploy", service, "--rolling", "--no-wait-retire"], app_dir)
        served = wait_served(url, marker)
        rows.append(dict(iteration=i, total=served - t0, build=t_built - t0, deploy=served - t_built))
        log(f"{label} build+deploy #{i}: {served - t0:.2f}s (build {t_built - t0:.2f})")
    return rows


def bench_plain(app_dir, service, path, make_old_new, label):
    """cargo build --release (static) + docker build + docker rm -f / docker run."""
    name = f"bench-plain-{tag}"
    image = f"bench-plain-{tag}:latest"
    port = 20000 + os.getpid() % 20000
    ctx = os.path.join(work, "plain-ctx")
    os.makedirs(ctx, exist_ok=True)
    cleanups.append(lambda: subprocess.run(["docker", "rm", "-f", name], capture_output=True))
    cleanups.append(lambda: subprocess.run(["docker", "rmi", "-f", image], capture_output=True))
    target = os.environ["CARGO_TARGET_DIR"]
    rows = []
    for i in range(0, ALT_N + 1):  # iteration 0 warms the release build up, not counted
        old, new, marker = make_old_new(200 + i)
        cpu0 = children_cpu()
        t0 = time.time()
        edit(path, old, new)
        subprocess.run(
            ["cargo", "build", "-q", "--release", "--target", "x86_64-unknown-linux-gnu", "-p", service],
            cwd=app_dir, env=dict(env, RUSTFLAGS="-C target-feature=+crt-static"), check=True)
        t_compiled = time.time()
        cpu_compile = children_cpu() - cpu0
        shutil.copy(os.path.join(target, "x86_64-unknown-linux-gnu/release", service), os.path.join(ctx, "app"))
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write("FROM scratch\nCOPY app /app\nUSER 10001\nENV PORT=8080\nENTRYPOINT [\"/app\"]\n")
        subprocess.run(["docker", "build", "-q", "-t", image, ctx], check=True, capture_output=True)
        t_image = time.time()
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", image],
                       check=True, capture_output=True)
        served = wait_served(f"http://127.0.0.1:{port}/api/{service}", marker)
        if i == 0:
            continue
        rows.append(dict(iteration=i, total=served - t0, compile=t_compiled - t0,
                         image=t_image - t_compiled, replace=served - t_image,
                         cpu_compile=cpu_compile, cpu=children_cpu() - cpu0))
        log(f"{label} plain #{i}: {served - t0:.2f}s (compile {t_compiled - t0:.2f}, image {t_image - t_compiled:.2f}, "
            f"replace {served - t_image:.2f}; CPU of cargo {cpu_compile:.2f}s)")
    return rows


def summary(rows, key="total"):
    xs = [r[key] for r in rows]
    return statistics.median(xs), max(xs)


def generated():
    name = f"bd{tag}"
    run([DRONECTL, "new", "app", name, "--no-git"], work)
    app = os.path.join(work, name)
    run([DRONECTL, "new", "service", "greeter", "--template", "rust-http"], app)
    cleanups.append(lambda: run([DRONECTL, "down", "--volumes"], app, check=False))
    cleanups.append(lambda: remove_images(name))
    api = os.path.join(app, "services/greeter/src/api.rs")
    current = ["Hello from greeter!"]

    def change(i):
        old, new = current[0], f"Hello, bench {i}!"
        current[0] = new
        return old, new, new

    dev_rows, url = bench_dev(app, "greeter", "/api/greeter", api, change, "generated")
    # ALT_ITERATIONS=0 leaves both out (the plain one would still build its warm-up).
    bd_rows = [] if os.environ.get("SKIP_BUILD_DEPLOY") or ALT_N == 0 else \
        bench_build_deploy(app, "greeter", url, api, change, "generated")
    plain_rows = [] if os.environ.get("SKIP_PLAIN") or ALT_N == 0 else \
        bench_plain(app, "greeter", api, change, "generated")
    return dev_rows, bd_rows, plain_rows


def reference():
    src = os.path.join(ROOT, "reference-app")
    name = f"rf{tag}"
    app = os.path.join(work, name)
    shutil.copytree(src, app, ignore=shutil.ignore_patterns("target"))
    manifest = os.path.join(app, "dronectl.yaml")
    text = open(manifest).read()
    text = re.sub(r"^app: .*$", f"app: {name}", text, count=1, flags=re.M)
    open(manifest, "w").write(text)
    cleanups.append(lambda: run([DRONECTL, "down", "--volumes"], app, check=False))
    cleanups.append(lambda: remove_images(name))
    main = os.path.join(app, "services/ingestion/src/main.rs")
    current = ['Json(json!({"status": "ready"}))']

    def change(i):
        old = current[0]
        new = f'Json(json!({{"status": "ready", "bench": {i}}}))'
        current[0] = new
        return old, new, f'"bench":{i}'

    return bench_dev(app, "ingestion", "/api/probe", main, change, "reference")[0]


def remove_images(app):
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                         capture_output=True, text=True).stdout
    for image in out.split():
        if image.startswith(app + "/"):
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


def fmt(rows, keys):
    return ", ".join(f"{k} {statistics.median([r[k] for r in rows]):.2f}" for k in keys)


try:
    load = open("/proc/loadavg").read().split()[:3]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    gen_dev = gen_bd = gen_plain = None
    if not os.environ.get("SKIP_GENERATED"):
        gen_dev, gen_bd, gen_plain = generated()
    ref_dev = None if os.environ.get("SKIP_REFERENCE") else reference()
    json.dump(dict(generated_dev=gen_dev, generated_build_deploy=gen_bd, generated_plain=gen_plain,
                   reference_dev=ref_dev), open(os.path.join(OUT, "results.json"), "w"), indent=1)
    end_load = open("/proc/loadavg").read().split()[:3]
    print(f"Run {started}, load average {' '.join(load)} at the start, {' '.join(end_load)} at the end.\n")
    print("| loop (edit → first response of the new version) | runs | median | max | vs dev |")
    print("|---|---|---|---|---|")
    keys = ["watch", "settle", "build", "compile", "image", "swap_to_served", "revision",
            "create", "start_ready", "cpu"]
    if gen_dev:
        dm, dx = summary(gen_dev)
        print(f"| `dronectl dev`, generated rust-http service | {len(gen_dev)} | {dm:.2f} s | {dx:.2f} s | 1× |")
        if gen_bd:
            bm, bx = summary(gen_bd)
            print(f"| `dronectl build` + `deploy --rolling`, generated service | {len(gen_bd)} | {bm:.2f} s | {bx:.2f} s | {bm / dm:.1f}× slower |")
        if gen_plain:
            pm, px = summary(gen_plain)
            print(f"| `cargo build --release` + `docker build` + container replace, generated service | {len(gen_plain)} | {pm:.2f} s | {px:.2f} s | {pm / dm:.1f}× slower |")
    if ref_dev:
        rm, rx = summary(ref_dev)
        print(f"| `dronectl dev`, reference app `ingestion` | {len(ref_dev)} | {rm:.2f} s | {rx:.2f} s | — |")
    print()
    if gen_dev:
        print(f"Where the time goes (medians, s) — generated: {fmt(gen_dev, keys)}")
        if gen_bd:
            print(f"build + deploy (medians, s): {fmt(gen_bd, ['build', 'deploy'])}")
        if gen_plain:
            print(f"plain (medians, s): {fmt(gen_plain, ['compile', 'image', 'replace', 'cpu_compile', 'cpu'])}")
    if ref_dev:
        print(f"Where the time goes (medians, s) — reference ingestion: {fmt(ref_dev, keys)}")
finally:
    for c in reversed(cleanups):
        try:
            c()
        except Exception as e:
            log(f"cleanup: {e}")
    shutil.rmtree(work, ignore_errors=True)
PY
