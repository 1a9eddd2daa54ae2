"""A small floyd host: a Python driver that runs instances as local processes, a Service and a
Deployment of HTTP servers, a scale-up, a rolling update, a rollback and a scale to zero.

    python examples/python/host.py            # real processes: python -m http.server
    python examples/python/host.py --fake     # no processes (a dict stands in)

The driver's `start` returns once the instance serves (its port accepts connections) with
the address traffic should go to; `stop` is idempotent; `probe` answers the instances'
readiness probe with an HTTP GET on the port it gave the instance. floyd calls them from its
own threads, holding the GIL only for the call.
"""

import argparse
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import floyd


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessDriver:
    """Runs each instance's `command` (with `{port}` filled in) as a child process."""

    def __init__(self, fake=False):
        self.fake = fake
        self.lock = threading.Lock()
        self.procs = {}  # instance uid -> (Popen | None, address)

    def start(self, instance):
        uid = instance["metadata"]["uid"]
        port = free_port()
        address = f"127.0.0.1:{port}"
        proc = None
        if not self.fake:
            cmd = [a.replace("{port}", str(port)) for a in instance["spec"]["command"]]
            env = {k: str(v) for k, v in instance["spec"].get("env", {}).items()}
            proc = subprocess.Popen(
                cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_for_port(proc, port)
        with self.lock:
            self.procs[uid] = (proc, address)
        return {"address": address}

    def stop(self, instance):
        with self.lock:
            proc, _ = self.procs.pop(instance["metadata"]["uid"], (None, None))
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def probe(self, instance, probe):
        """The readinessProbe's httpGet, sent to the port this driver chose for the instance
        (the template cannot know it)."""
        with self.lock:
            _, address = self.procs.get(instance["metadata"]["uid"], (None, None))
        if address is None:
            return False
        if self.fake:
            return True
        url = f"http://{address}{probe['httpGet'].get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=probe["timeoutSeconds"]) as r:
                return 200 <= r.status < 400
        except OSError:
            return False

    def running(self):
        with self.lock:
            return len(self.procs)

    def stop_all(self):
        with self.lock:
            procs, self.procs = list(self.procs.values()), {}
        for proc, _ in procs:
            if proc is not None:
                proc.kill()
                proc.wait()


def wait_for_port(proc, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before serving")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"not serving on port {port} after {timeout}s")


def deployment(replicas, version):
    server = [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    return {
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "version": version,
                    "command": server,
                    "env": {"VERSION": version},
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1},
                },
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "progressDeadlineSeconds": 60,
        },
    }


def set_version(store, version):
    while True:  # the controller writes the Deployment's status concurrently
        d = store.get("Deployment", "default/web")
        d["spec"]["template"]["spec"]["version"] = version
        d["spec"]["template"]["spec"]["env"]["VERSION"] = version
        try:
            return store.update(d)
        except floyd.Conflict:
            pass


def until(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def versions(store):
    return sorted(i["spec"]["version"] for i in store.list("Instance", label_selector="app=web")[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fake", action="store_true", help="start no processes")
    args = ap.parse_args()

    store = floyd.Store.memory()
    driver = ProcessDriver(fake=args.fake)
    try:
        with floyd.ControlPlane(store, driver, workers=2) as cp:
            store.create(
                {"kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}}}
            )
            store.create(deployment(3, "v1"))
            st = cp.wait_for_rollout("default/web", timeout=60)
            print(f"rolled out: {st['readyReplicas']}/{st['replicas']} ready, versions {versions(store)}")
            until(lambda: len(cp.endpoints("default/web")) == 3)
            print("endpoints:", sorted(cp.endpoints("default/web")))
            for _ in range(3):
                addr = cp.pick("default/web")
                if args.fake:
                    print("  pick ->", addr)
                else:
                    with urllib.request.urlopen(f"http://{addr}/", timeout=5) as r:
                        print(f"  pick -> {addr}: HTTP {r.status}")

            cp.scale("default/web", 5)
            cp.wait_for_rollout("default/web", 60)
            until(lambda: len(cp.endpoints("default/web")) == 5)
            print(f"scaled to 5: {driver.running()} running")

            set_version(store, "v2")
            cp.wait_for_rollout("default/web", 60)
            until(lambda: versions(store) == ["v2"] * 5)
            print("rolled to v2:", versions(store))

            rev = cp.rollback("default/web")
            cp.wait_for_rollout("default/web", 60)
            until(lambda: versions(store) == ["v1"] * 5)
            print(f"rolled back to revision {rev}:", versions(store))

            cp.scale("default/web", 0)
            until(lambda: driver.running() == 0 and not cp.running_instances())
            print("scaled to 0:", cp.stats())
    finally:
        driver.stop_all()
        store.close()
    print("done")


if __name__ == "__main__":
    main()
