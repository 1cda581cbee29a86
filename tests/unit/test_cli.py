"""The command line without root: dry runs, errors, help."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from nsk.cli.commands import cli

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]
"""


def run(args, monkeypatch, euid=1000, input=None):
    monkeypatch.setattr("os.geteuid", lambda: euid)
    return CliRunner().invoke(cli, args, input=input)


def test_up_without_root_says_what_needs_root(tmp_path, monkeypatch):
    f = tmp_path / "web.yaml"
    f.write_text(WEB)
    r = run(["up", str(f)], monkeypatch)
    assert r.exit_code == 1
    assert r.output == \
        "Error: nsk up needs root: it works with network namespaces and /run/nsk (run it with sudo)\n"


def test_dry_run_needs_no_root_and_prints_the_plan(tmp_path, monkeypatch):
    f = tmp_path / "web.yaml"
    f.write_text(WEB)
    r = run(["up", "--dry-run", str(f), "--cluster", "lab"], monkeypatch)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[:4] == [
        "cluster lab (dry run: nothing is changed)",
        "  wire namespace nsk_lab_net: br-nodes 172.18.0.1/24, br-ext 192.0.2.1/24, forwarding",
        "  node node-1: namespace nsk_lab_node_node-1, eth0 172.18.0.2/24 (peer n-node-1), "
        "cbr0 10.244.1.1 for Pods 10.244.1.0/24",
        "    route 10.244.2.0/24 via 172.18.0.3",
    ]
    assert r.output.splitlines()[-1] == "  Deployment default/web x2"


def test_bad_file_is_one_error_line(tmp_path, monkeypatch):
    f = tmp_path / "bad.yaml"
    f.write_text(WEB.replace("replicas: 2", "replicas: -1"))
    r = run(["up", "--dry-run", str(f)], monkeypatch)
    assert r.exit_code == 1
    assert r.output == (f'Error: {f}: Deployment "default/web" is invalid: spec.replicas: Invalid value: -1: '
                        "must be greater than or equal to 0\n")
    r = run(["up", "--dry-run", str(tmp_path / "missing.yaml")], monkeypatch)
    assert r.exit_code == 1
    assert r.output == f"Error: {tmp_path / 'missing.yaml'}: cannot read the file: No such file or directory\n"


def test_input_no_manifest_could_be_is_one_error_line(tmp_path, monkeypatch):
    """`nsk up /dev/zero` once died of a MemoryError; a NUL byte or a directory, too, is
    one line: the API server's 3 MiB limit, a binary file, an empty directory."""
    cases = [("/dev/zero", "/dev/zero: larger than 3 MiB, the API server's limit for a request")]
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(WEB.encode() + b"\0")
    cases.append((str(nul), f"{nul}: not a text file (a NUL byte at byte {len(WEB)})"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text(WEB)
    cases.append((str(empty), f"{empty}: a directory with no manifest in it (files ending .json, .yaml, .yml)"))
    for path, message in cases:
        r = run(["up", "--dry-run", path], monkeypatch)
        assert (r.exit_code, r.output) == (1, f"Error: {message}\n")


def test_a_directory_is_one_topology_as_kubectl_apply_reads_it(tmp_path, monkeypatch):
    d = tmp_path / "lab"
    d.mkdir()
    (d / "1-web.yaml").write_text(WEB)
    (d / "2-svc.json").write_text('{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, '
                                  '"spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}')
    (d / "README.md").write_text("not a manifest")
    r = run(["up", "--dry-run", str(d)], monkeypatch)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-2:] == ["  Deployment default/web x2", "  Service default/web"]
    (d / "3-bad.yaml").write_text(WEB.replace("replicas: 2", "replicas: -1").replace("name: web}", "name: w2}"))
    r = run(["up", "--dry-run", str(d)], monkeypatch)
    assert r.output.startswith(f'Error: {d / "3-bad.yaml"}: Deployment "default/w2" is invalid')


def test_bad_cluster_name(tmp_path, monkeypatch):
    f = tmp_path / "web.yaml"
    f.write_text(WEB)
    r = run(["up", "--dry-run", str(f), "--cluster", "Bad_Name"], monkeypatch)
    assert r.exit_code == 1
    assert r.output.startswith('Error: --cluster: Invalid value: "Bad_Name": a lowercase RFC 1123 label')


def test_apply_checks_node_names_against_the_running_cluster():
    """A file without a Cluster document names the live cluster's nodes, not the defaults."""
    import pytest

    from nsk.api.cluster import ClusterConfig, NodeConfig
    from nsk.api.load import load
    from nsk.errors import NskError
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: worker-a\n" \
          "  containers: [{name: c, image: x}]\n"
    live = ClusterConfig(name="lab", nodes=(NodeConfig("worker-a"), NodeConfig("worker-b")))
    assert load(pod, "p.yaml", live=live).objects[0]["spec"]["nodeName"] == "worker-a"
    with pytest.raises(NskError, match="the cluster's nodes are node-1, node-2"):
        load(pod, "p.yaml")
    with pytest.raises(NskError, match='Not found: "node-1": the cluster\'s nodes are worker-a, worker-b'):
        load(pod.replace("worker-a", "node-1"), "p.yaml", live=live)


@pytest.fixture
def stored(tmp_path, monkeypatch):
    """A cluster's store (no control plane, no kernel) under a private RUN_ROOT, with WEB in it."""
    import yaml

    from nsk.api.cluster import parse_cluster
    from nsk.apiserver.admission import admit
    from nsk.apiserver.server import APIServer
    from nsk.store import Store, sqlite
    monkeypatch.setattr(sqlite, "RUN_ROOT", str(tmp_path))
    (tmp_path / "c1").mkdir()
    store = Store(str(tmp_path / "c1"), create=True)
    cfg = parse_cluster(None)
    store.set_meta("cluster", cfg.to_dict())
    store.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    APIServer(store, cfg).apply([admit(d) for d in yaml.safe_load_all(WEB)])
    yield store
    store.close()


def test_an_apply_of_a_stale_object_is_refused_in_kubectls_words(stored, tmp_path, monkeypatch):
    """A manifest saved with `get -o yaml` before someone else changed the object: 409."""
    saved = tmp_path / "saved.yaml"
    saved.write_text(run(["get", "deploy", "web", "-o", "yaml", "--cluster", "c1"], monkeypatch, euid=0).output)
    assert run(["scale", "deployment/web", "--replicas", "5", "--cluster", "c1"], monkeypatch, euid=0).exit_code == 0
    r = run(["apply", "-f", str(saved), "--cluster", "c1"], monkeypatch, euid=0)
    assert r.exit_code == 1
    assert r.output == ('Error from server (Conflict): Operation cannot be fulfilled on deployments.apps "web": the '
                        "object has been modified; please apply your changes to the latest version and try again\n")
    assert stored.get("Deployment", "default", "web")["spec"]["replicas"] == 5


def test_a_usage_error_is_one_line_that_says_where_to_look(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as e:
        cli.main(["get"], prog_name="nsk")
    assert e.value.code == 1
    assert capsys.readouterr().err == "Error: Missing argument 'KIND'. (see 'nsk get --help')\n"


def test_writes_while_the_control_plane_is_dead_say_so(stored, monkeypatch):
    r = run(["scale", "deployment", "web", "--replicas", "2", "--cluster", "c1"], monkeypatch, euid=0)
    assert r.exit_code == 0 and "deployment.apps/web scaled" in r.output
    assert 'Warning: the control plane of cluster "nsk" is not running' in r.output  # (CliRunner mixes stderr in)


def test_a_store_error_is_one_line_not_a_traceback(stored, monkeypatch):
    """#16: a failing store (here: locked past its timeout) reaches the CLI as one line."""
    import sqlite3

    from nsk.store import sqlite as store_mod

    def locked(self, *a, **kw):
        raise sqlite3.OperationalError("database is locked")
    monkeypatch.setattr(store_mod.Store, "list", locked)
    r = run(["get", "pods", "--cluster", "c1"], monkeypatch, euid=0)
    assert r.exit_code == 1
    assert r.output == ("Error: the cluster's store: database is locked (nothing was changed by this command; "
                        "`--debug` shows where)\n")
