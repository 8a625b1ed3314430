"""Test support for the production instance: a throwaway PostgreSQL server, and deploy/dagster.yaml
made loadable on a machine without a Kubernetes cluster.

``postgres_server`` (a pytest fixture) runs ``initdb`` into a fresh temporary folder, starts the
server on a free localhost port with password authentication, creates the ``dagster`` database,
and stops the server and deletes the folder afterwards. PostgreSQL refuses to run as root, so as
root it runs as the ``postgres`` user. Without the PostgreSQL binaries the tests that need it are
skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_INSTANCE = ROOT / "deploy" / "dagster.yaml"
SERVER_USER = "postgres"  # the OS account that runs the server when the tests run as root
DATABASE_USER = "dagster"
DATABASE = "dagster"
PASSWORD = "throwaway-test-password"  # a local test server that lives for one test module


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    socket_dir: str

    @property
    def env(self) -> dict[str, str]:
        """What deploy/dagster.yaml reads its storage settings from."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": DATABASE,
            "DAGSTER_PG_USERNAME": DATABASE_USER,
            "DAGSTER_PG_PASSWORD": PASSWORD,
        }

    def connect(self, database: str = DATABASE):
        return psycopg2.connect(host=self.host, port=self.port, user=DATABASE_USER, password=PASSWORD, dbname=database)


def postgres_bin_dir() -> Path | None:
    candidates = [os.path.dirname(shutil.which("initdb") or "")]
    candidates += ["/usr/local/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_root = os.geteuid() == 0
    if as_root:
        try:
            server_account = pwd.getpwnam(SERVER_USER)
        except KeyError:
            pytest.skip(f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as")
    # Directly under the system temp dir: pytest's own temp folders are private to the test user.
    root = Path(tempfile.mkdtemp(prefix="cosmos-pg-"))
    prefix = ["runuser", "-u", SERVER_USER, "--"] if as_root else []
    data, log = root / "data", root / "server.log"
    server = PostgresServer("127.0.0.1", free_port(), str(root))
    started = False
    try:
        password_file = root / "password"
        password_file.write_text(PASSWORD)
        if as_root:
            os.chown(root, server_account.pw_uid, server_account.pw_gid)
            os.chown(password_file, server_account.pw_uid, server_account.pw_gid)
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", DATABASE_USER, "--pwfile", str(password_file),
             "--auth", "scram-sha-256", "--encoding", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )
        # Durability settings off: a test database that is thrown away needs no fsync.
        options = (f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"],
                       check=True, capture_output=True, timeout=90)
        started = True
        with contextlib.closing(server.connect("postgres")) as connection:
            connection.autocommit = True
            connection.cursor().execute(f"CREATE DATABASE {DATABASE}")
        yield server
    finally:
        if started:
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"],
                           capture_output=True, timeout=90)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def production_instance_config() -> dict:
    return yaml.safe_load(PRODUCTION_INSTANCE.read_text())


def offline_kubeconfig(folder: Path) -> Path:
    """Credentials for a cluster that does not exist: loading them contacts nothing."""
    path = folder / "kubeconfig"
    cluster = {"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}
    user = {"name": "offline", "user": {"token": "not-a-credential"}}
    context = {"name": "offline", "context": {"cluster": "offline", "user": "offline"}}
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": "offline",
                                    "clusters": [cluster], "users": [user], "contexts": [context]}))
    return path


def offline_run_launcher(config: dict, kubeconfig: Path) -> dict:
    """The production ``run_launcher`` section, reading the offline kubeconfig instead of the
    in-cluster service account (the only setting that needs a cluster to load)."""
    launcher = config["run_launcher"]
    return {**launcher, "config": {**launcher["config"], "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}}
