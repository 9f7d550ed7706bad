"""A real Kubernetes control plane for tests, as controller-runtime's envtest runs it: etcd
and kube-apiserver on free loopback ports (secure serving with certificates made here,
RBAC authorization, a service-account signing key, an admin identity for the tests), and
kube-controller-manager with the controllers the project relies on (garbage collection
of owned objects, batch Jobs, service accounts, namespaces). No kubelet or container
runtime can run on these machines: `kubelet.py` stands in for one.

The binaries are built from Go modules by `tests/k8s/build.sh` into a cache folder (see
the README); K8S_SERVERS_DIR names a folder that already holds them.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from backup_operator.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "tests" / "k8s" / "build.sh"
# The controllers a cluster runs that this project's resources depend on.
CONTROLLERS = (
    "garbage-collector-controller,job-controller,serviceaccount-controller,namespace-controller,"
    "ttl-after-finished-controller,clusterrole-aggregation-controller"
)


def servers_dir() -> Path:
    """The folder of the built servers: K8S_SERVERS_DIR, or built (once) by build.sh."""
    given = os.environ.get("K8S_SERVERS_DIR")
    if given:
        return Path(given)
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the Kubernetes test servers failed:\n{done.stderr}")
    os.environ["K8S_SERVERS_DIR"] = done.stdout.strip()
    return Path(done.stdout.strip())


def crds() -> list[dict[str, Any]]:
    return [
        crd
        for path in sorted((ROOT / "crds").glob("*.yaml"))
        for crd in yaml.safe_load_all(path.read_text())
    ]


def url_of(key: str, namespace: str | None = None, name: str | None = None) -> str:
    """The API path of a resource named as `group/version/plural` (`v1/plural` for the
    core group), optionally namespaced and of one object."""
    parts = key.split("/")
    base = f"/api/{parts[0]}" if len(parts) == 2 else f"/apis/{parts[0]}/{parts[1]}"
    path = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{parts[-1]}"
    return path + (f"/{name}" if name else "")


class _Pki:
    """A CA, the server's certificate, client certificates and the service-account key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca_key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
        self.ca = (
            _builder(name, name, self.ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = self._write("ca.crt", _pem(self.ca))
        server_key = _key()
        server = (
            _builder(_subject("kube-apiserver"), self.ca.subject, server_key)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.server_cert = self._write("server.crt", _pem(server))
        self.server_key = self._write("server.key", _key_pem(server_key))
        sa_key = _key()
        self.sa_key = self._write("sa.key", _key_pem(sa_key))
        self.sa_pub = self._write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def client(self, user: str, *groups: str) -> tuple[Path, Path]:
        key = _key()
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, user)]
        )
        cert = _builder(subject, self.ca.subject, key).sign(self.ca_key, hashes.SHA256())
        return self._write(f"{user}.crt", _pem(cert)), self._write(f"{user}.key", _key_pem(key))

    def context(self, cert: Path, key: Path) -> ssl.SSLContext:
        """TLS for a client of the API server with this client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(cert), str(key))
        return context

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class Cluster:
    """The running control plane: an admin client, kubeconfigs and identities."""

    def __init__(self, folder: Path, url: str, pki: _Pki, binaries: Path) -> None:
        self.folder = folder
        self.url = url
        self.pki = pki
        self.binaries = binaries
        self.kubectl_binary = str(binaries / "kubectl")
        cert, key = pki.client("test-admin", "system:masters")
        self.admin_cert = (str(cert), str(key))
        self.admin = httpx.Client(base_url=url, verify=pki.context(cert, key), timeout=30)
        self.admin_kubeconfig = self.kubeconfig(folder / "admin.kubeconfig")

    # -- identities ---------------------------------------------------------------
    def kubeconfig(
        self, path: Path, *, token: str | None = None, namespace: str = "default"
    ) -> Path:
        """A kubeconfig for the admin (client certificate), or for a bearer token."""
        user: dict[str, str] = (
            {"token": token}
            if token
            else {"client-certificate": self.admin_cert[0], "client-key": self.admin_cert[1]}
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.url, "certificate-authority": str(self.pki.ca_file)},
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "user", "namespace": namespace},
                }
            ],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A TokenRequest token of a ServiceAccount, as a pod of it would be given."""
        response = self.request(
            "POST",
            url_of("v1/serviceaccounts", namespace, service_account) + "/token",
            json={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            },
        )
        response.raise_for_status()
        return str(response.json()["status"]["token"])

    # -- objects, as the admin sees them -------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call as the admin; a 429 (the server shedding load) is retried as client-go
        does, after the Retry-After it names."""
        for _ in range(20):
            response = self.admin.request(method, path, **kwargs)
            if response.status_code != 429:
                return response
            time.sleep(min(float(response.headers.get("Retry-After") or 1), 2))
        return response

    def create(self, key: str, manifest: dict[str, Any], namespace: str | None = None) -> Any:
        response = self.request("POST", url_of(key, namespace), json=manifest)
        if response.status_code >= 400:
            raise AssertionError(f"creating {key}: {response.status_code} {response.text}")
        return response.json()

    def get(self, key: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        response = self.request("GET", url_of(key, namespace, name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    def objects(self, key: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """The live objects of a resource, by name."""
        response = self.request("GET", url_of(key, namespace))
        if response.status_code == 404:  # a resource not (yet) served
            return {}
        response.raise_for_status()
        return {o["metadata"]["name"]: o for o in response.json()["items"]}

    def phases(self, key: str, namespace: str | None = None) -> dict[str, str | None]:
        """`status.phase` of each live object of a resource: a cheap poll for benchmarks."""
        return {
            n: (o.get("status") or {}).get("phase") for n, o in self.objects(key, namespace).items()
        }

    def metric(self, name: str, **labels: str) -> float:
        """The sum of an API server metric's samples matching `labels` (from /metrics)."""
        total = 0.0
        for line in self.request("GET", "/metrics").text.splitlines():
            if not line.startswith(name + "{"):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl_binary, f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def apply_crds(self) -> None:
        done = self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        if done.returncode != 0:
            raise AssertionError(f"kubectl apply -f crds/: {done.stderr}")
        for crd in crds():
            self.wait_established(crd["metadata"]["name"])

    def wait_established(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            crd = self.get("apiextensions.k8s.io/v1/customresourcedefinitions", name) or {}
            conditions = {
                c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])
            }
            if conditions.get("Established") == "True":
                return
            time.sleep(0.1)
        raise AssertionError(f"CRD {name} not established")

    # -- namespaces --------------------------------------------------------------
    def new_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.create("v1/namespaces", {"metadata": {"name": name}})
        # The serviceaccount controller makes `default`, which pods need.
        deadline = time.monotonic() + 30
        while self.get("v1/serviceaccounts", "default", name) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no default ServiceAccount in {name}")
            time.sleep(0.05)
        return name

    def drop_namespace(self, name: str) -> None:
        """Delete a test's namespace; finalizers of this project's resources are removed
        first (their operator is gone), so the namespace controller can empty it."""
        for crd in crds():
            spec = crd["spec"]
            if spec["scope"] != "Namespaced":
                continue
            key = f"{spec['group']}/{spec['versions'][0]['name']}/{spec['names']['plural']}"
            for obj_name, obj in self.objects(key, name).items():
                if obj["metadata"].get("finalizers"):
                    self.request(
                        "PATCH",
                        url_of(key, name, obj_name),
                        json={"metadata": {"finalizers": None}},
                        headers={"Content-Type": "application/merge-patch+json"},
                    )
        self.request("DELETE", url_of("v1/namespaces", None, name))


def _wait_ready(
    url: str, check: Any, process: subprocess.Popen[bytes], log: Path, what: str
) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        with suppress(httpx.HTTPError):
            if check(url):
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready:\n{log.read_text()[-3000:]}")


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@contextmanager
def control_plane(folder: Path) -> Iterator[Cluster]:
    binaries = servers_dir()
    folder.mkdir(parents=True, exist_ok=True)
    pki = _Pki(folder)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd_log = folder / "etcd.log"
        processes.append(
            _start(
                [
                    str(binaries / "etcd"),
                    f"--data-dir={folder / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync",  # a test's data: speed over durability
                    "--log-level=warn",
                ],
                etcd_log,
            )
        )
        _wait_ready(
            etcd_url,
            lambda u: httpx.get(f"{u}/health", timeout=2).json().get("health") == "true",
            processes[-1],
            etcd_log,
            "etcd",
        )
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        apiserver_log = folder / "kube-apiserver.log"
        processes.append(
            _start(
                [
                    str(binaries / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    f"--cert-dir={folder / 'certs'}",
                    f"--tls-cert-file={pki.server_cert}",
                    f"--tls-private-key-file={pki.server_key}",
                    f"--client-ca-file={pki.ca_file}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={port}",
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--allow-privileged=true",
                    "--authorization-mode=RBAC",
                    f"--service-account-issuer={url}",
                    f"--service-account-key-file={pki.sa_pub}",
                    f"--service-account-signing-key-file={pki.sa_key}",
                    "--endpoint-reconciler-type=none",
                    "--profiling=false",
                    # One machine's tests, not a shared cluster: no load shedding.
                    "--enable-priority-and-fairness=false",
                    "--max-requests-inflight=2000",
                    "--max-mutating-requests-inflight=1000",
                    "--v=1",
                ],
                apiserver_log,
            )
        )
        ready_check = pki.context(*pki.client("ready-check", "system:masters"))
        _wait_ready(
            url,
            lambda u: httpx.get(f"{u}/readyz", verify=ready_check, timeout=2).text == "ok",
            processes[-1],
            apiserver_log,
            "kube-apiserver",
        )
        cluster = Cluster(folder, url, pki, binaries)
        manager_log = folder / "kube-controller-manager.log"
        processes.append(
            _start(
                [
                    str(binaries / "kube-controller-manager"),
                    f"--kubeconfig={cluster.admin_kubeconfig}",
                    f"--authentication-kubeconfig={cluster.admin_kubeconfig}",
                    f"--authorization-kubeconfig={cluster.admin_kubeconfig}",
                    f"--controllers={CONTROLLERS}",
                    "--leader-elect=false",
                    "--authentication-skip-lookup",
                    f"--root-ca-file={pki.ca_file}",
                    f"--service-account-private-key-file={pki.sa_key}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    f"--cert-dir={folder / 'kcm-certs'}",
                    "--v=1",
                ],
                manager_log,
            )
        )
        cluster.apply_crds()
        yield cluster
    finally:
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(folder / "etcd", ignore_errors=True)


def secret_data(values: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
