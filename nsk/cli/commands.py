"""The command line: parse, call one library function, print (kubectl's words and columns).

Results go to stdout, progress to stderr. Expected failures print `Error: ...` and exit 1;
`--debug` shows the traceback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import traceback

import click

from nsk import __version__
from nsk.errors import ApiError, InvalidObject, NotFound, NskError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Group(click.Group):
    def main(self, *args, **kwargs):
        """click's usage errors as one line, with where to look (kubectl's habit), exit 1."""
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Abort:
            click.echo("Error: interrupted", err=True)
            sys.exit(1)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "nsk"
            click.echo(f"Error: {e.format_message()} (see '{where} --help')", err=True)
            sys.exit(1)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NskError as e:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            # kubectl's words for what the API server refused (a stale write, a missing object...);
            # an invalid object keeps nsk's one line, which names the file too
            prefix = f"Error from server ({e.reason})" if isinstance(e, ApiError) and not isinstance(
                e, InvalidObject) else "Error"
            click.echo(f"{prefix}: {e}", err=True)
            sys.exit(1)
        except PermissionError as e:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"Error: {e} (nsk needs root for this: run it with sudo)", err=True)
            sys.exit(1)
        except sqlite3.Error as e:  # the store itself failed (locked too long, disk full, damaged)
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"Error: the cluster's store: {e} (nothing was changed by this command; "
                       "`--debug` shows where)", err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="nsk")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx, debug):
    """nsk: Kubernetes Service networking on this Linux host, with the real kernel doing the work.

    \b
    Pods are network namespaces, nodes are namespaces with a bridge. Start with:
      sudo nsk up topologies/quickstart.yaml
      sudo nsk get pods -o wide
      sudo nsk expose deployment/my-nginx
      sudo nsk exec POD -- curl -s my-nginx
      sudo nsk down
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or bool(os.environ.get("NSK_DEBUG"))


def cluster_option(f):
    return click.option("--cluster", "cluster", metavar="NAME",
                        help="The cluster (default: $NSK_CLUSTER, else the only one up).")(f)


def namespace_options(f):
    f = click.option("-A", "--all-namespaces", is_flag=True, help="List objects of every namespace.")(f)
    return click.option("-n", "--namespace", default="default", show_default=True, help="The namespace.")(f)


def _store(cluster: str | None):
    from nsk.lifecycle import open_store, resolve
    return open_store(resolve(cluster))


def _api(cluster: str | None):
    from nsk.apiserver.server import APIServer
    return APIServer(_store(cluster))


def _warn_if_down(api) -> None:
    """After a write: say so when no control plane will act on it."""
    from nsk.lifecycle import control_plane_pid
    alive, _ = control_plane_pid(api.store)
    if alive is None:
        name = api.cfg.name
        click.echo(f'Warning: the control plane of cluster "{name}" is not running: nothing acts on this change '
                   f"until `nsk resume --cluster {name}`", err=True)


def read_stream(f, source: str) -> str:
    from nsk.api.load import MAX_BYTES, text_of
    return text_of(f.read(MAX_BYTES + 1), source)


def read_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return read_stream(f, path)
    except OSError as e:
        raise NskError(f"{path}: cannot read the file: {e.strerror}") from e


def read_sources(path: str) -> list[tuple[str, str]]:
    """(source, text) of a manifest path: a file, `-` for stdin, or a directory's
    .json/.yaml/.yml files in name order, as `kubectl apply -f DIR` reads them."""
    from nsk.api.load import EXTENSIONS
    if path == "-":
        return [("<stdin>", read_stream(sys.stdin.buffer, "<stdin>"))]
    if not os.path.isdir(path):
        return [(path, read_file(path))]
    try:
        entries = sorted(os.listdir(path))
    except OSError as e:
        raise NskError(f"{path}: cannot read the directory: {e.strerror}") from e
    files = [os.path.join(path, e) for e in entries
             if e.endswith(EXTENSIONS) and os.path.isfile(os.path.join(path, e))]
    if not files:
        raise NskError(f"{path}: a directory with no manifest in it (files ending {', '.join(EXTENSIONS)})")
    return [(f, read_file(f)) for f in files]


def _load(path: str, live=None):
    """A manifest file, directory or stdin; `live` is the running cluster's config for apply/delete."""
    from nsk.api.load import load_sources
    return load_sources(read_sources(path), live=live)


# ---- up / down / status ----------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--cluster", "cluster", metavar="NAME", help="Cluster name (default: the Cluster document's, else nsk).")
@click.option("--dry-run", is_flag=True, help="Print the plan (nodes, addresses, namespaces, Pods); change nothing.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the Pods (default 60 + 0.2 a Pod).")
def up(file, cluster, dry_run, timeout):
    """Create the cluster described by FILE (Kubernetes manifests + an optional Cluster).

    FILE may be a directory: its .yaml, .yml and .json files make one topology.

    Returns when every Pod runs, or says at once why one cannot and leaves the
    cluster up to look at. Needs root, except with --dry-run.
    """
    from dataclasses import replace
    m = _load(file)
    if cluster:
        from nsk.api import names
        if names.dns1123_label(cluster):
            raise NskError(f'--cluster: Invalid value: "{cluster}": {names.dns1123_label(cluster)[0]}')
        m = replace(m, cluster=replace(m.cluster, name=cluster))
    if dry_run:
        click.echo(_render_plan(m), nl=False)
        return
    from nsk import lifecycle
    lifecycle.need_root("nsk up")
    tty = sys.stderr.isatty()
    name = m.cluster.name
    line_open = [False]  # a tty line being rewritten in place

    def progress(stage: str, text: str, final: bool = True) -> None:
        if stage == "start":
            click.echo(text, err=True)
        elif tty:  # rewrite the line until the stage is done
            click.echo(f"\r • {text}", err=True, nl=final)
            line_open[0] = not final
        elif final:
            click.echo(f" • {text}", err=True)

    try:
        res = lifecycle.up(m, progress, timeout, file)
    finally:
        if line_open[0]:
            click.echo("", err=True)
    click.echo(f'Cluster "{name}" is up: {len(res.plan.nodes)} nodes, {res.pods} Pods in {res.seconds:.2f} s.',
               err=True)
    click.echo(_summary(res.plan, name), nl=False)


def _render_plan(m) -> str:
    from nsk.net.plan import plan
    p = plan(m.cluster)
    lines = [f"cluster {p.name} (dry run: nothing is changed)",
             f"  wire namespace {p.wire_netns}: {p.node_bridge} {p.router_node_ip}/{p.node_prefix}, "
             f"{p.ext_bridge} {p.router_ext_ip}/{p.ext_prefix}, forwarding"]
    for n in p.nodes:
        lines.append(f"  node {n.name}: namespace {n.netns}, eth0 {n.ip}/{p.node_prefix} (peer {n.uplink}), "
                     f"cbr0 {n.gateway} for Pods {n.pod_cidr}")
        for dst, via in p.routes(n):
            lines.append(f"    route {dst} via {via}")
    for h in p.hosts:
        lines.append(f"  external host {h.name}: namespace {h.netns}, eth0 {h.ip}/{p.ext_prefix} "
                     f"(peer {h.uplink}), default via {p.router_ext_ip}")
    for obj in m.objects:
        meta = obj["metadata"]
        extra = f" x{obj['spec']['replicas']}" if obj["kind"] == "Deployment" else ""
        lines.append(f"  {obj['kind']} {meta['namespace'] + '/' if meta.get('namespace') else ''}{meta['name']}{extra}")
    return "\n".join(lines) + "\n"


def _summary(p, name: str) -> str:
    from nsk.apiserver.printers import table
    rows = [[n.name, n.ip, n.pod_cidr, n.netns] for n in p.nodes]
    rows += [[f"host/{h.name}", h.ip, "-", h.netns] for h in p.hosts]
    from nsk.lifecycle import clusters
    flag = "" if clusters() == [name] else f" --cluster {name}"  # without it, a command means the only one up
    text = table(["NODE", "IP", "POD CIDR", "NETWORK NAMESPACE"], rows)
    text += (f"\nNext: nsk get pods -o wide{flag}   nsk exec POD{flag} -- curl -s POD-IP   nsk down{flag}\n")
    return text


@cli.command(context_settings=CONTEXT)
@cluster_option
def down(cluster):
    """Delete the cluster: every namespace, interface, process and file it made."""
    from nsk import lifecycle
    name = lifecycle.resolve(cluster)
    res = lifecycle.down(name)
    click.echo(f'cluster "{name}" deleted ({res.namespaces} network namespaces, {res.processes} processes removed)')


@cli.command(context_settings=CONTEXT)
@cluster_option
def resume(cluster):
    """Start a new control plane for a cluster whose control plane died (it adopts the Pods)."""
    from nsk import lifecycle
    name = lifecycle.resolve(cluster)
    pid = lifecycle.resume(name)
    click.echo(f'cluster "{name}": control plane running again (pid {pid})')


@cli.command(context_settings=CONTEXT)
@cluster_option
def status(cluster):
    """The cluster at a glance: control plane, nodes, and each Pod's kernel names."""
    from nsk.apiserver.printers import table
    from nsk.lifecycle import control_plane_pid
    from nsk.net.plan import plan, pod_veth
    api = _api(cluster)
    store, cfg = api.store, api.cfg
    p = plan(cfg)
    alive, refs = control_plane_pid(store)
    cp = f"running (pid {alive.pid})" if alive else (f"NOT running (pid {refs[0].pid} is gone)" if refs else "none")
    mode = store.get_meta("proxy-mode") or cfg.proxy_mode
    if mode != cfg.proxy_mode:
        from nsk.proxy.provider import fallback
        mode += f" (the Cluster asks for {cfg.proxy_mode}: {fallback(cfg.proxy_mode) or 'switching'})"
    elif mode == "userspace":
        mode += " (removed in Kubernetes 1.26)"
    click.echo(f"Cluster:        {cfg.name}\nControl plane:  {cp}\nProxy mode:     {mode}\n"
               f"Pod subnet:     {cfg.pod_subnet}\nService subnet: {cfg.service_subnet}\n"
               f"Store:          {store.dir}/store.db\n")
    rows = [[n.name, n.ip, n.pod_cidr, n.netns, "eth0 (peer " + n.uplink + ")"] for n in p.nodes]
    rows += [[f"host/{h.name}", h.ip, "-", h.netns, "eth0 (peer " + h.uplink + ")"] for h in p.hosts]
    rows.append(["wire", f"{p.router_node_ip}, {p.router_ext_ip}", "-", p.wire_netns,
                 f"{p.node_bridge}, {p.ext_bridge}"])
    click.echo(table(["NODE", "IP", "POD CIDR", "NETWORK NAMESPACE", "INTERFACES"], rows))
    sandboxes = {n: json.loads(d) for _, n, d in store.owned("sandbox")}
    prow = []
    for ref, box in sorted(sandboxes.items()):
        ns, name = ref.split("/", 1)
        veth = "-" if box["netns"] == p.node(box["node"]).netns else pod_veth(ns, name, box["uid"])
        prow.append([ref, box["ip"], box["node"], box["netns"], veth])
    if prow:
        click.echo("\n" + table(["POD", "IP", "NODE", "NETWORK NAMESPACE", "NODE VETH"], prow), nl=False)


# ---- kubectl verbs ---------------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@click.argument("kind")
@click.argument("names", nargs=-1)
@namespace_options
@click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json", "name"]), help="Output format.")
@click.option("-l", "--selector", help="Label selector, e.g. run=my-nginx,tier!=db.")
@cluster_option
def get(kind, names, namespace, all_namespaces, output, selector, cluster):
    """List objects: pods, nodes, deployments, services, endpoints, endpointslices, namespaces."""
    from nsk.api.objects import parse_label_selector, selected
    from nsk.apiserver import printers as out
    from nsk.apiserver import registry
    if "/" in kind:  # kubectl's `get pod/NAME`
        kind, name = kind.split("/", 1)
        names = (name, *names)
    r = registry.lookup(kind)
    store = _store(cluster)
    ns = None if all_namespaces or not r.namespaced else namespace
    items = store.list(r.kind, ns)
    if names:
        found = {i["metadata"]["name"]: i for i in items}
        missing = [n for n in names if n not in found]
        if missing:
            raise NotFound(f'{r.group_resource} "{missing[0]}" not found')
        items = [found[n] for n in names]
    if selector:
        terms = parse_label_selector(selector)
        items = [i for i in items if selected(terms, i["metadata"].get("labels") or {})]
    if output in ("yaml", "json"):
        doc = items[0] if len(names) == 1 else out.to_list(items)
        click.echo(out.dump(doc, output), nl=False)
        return
    if output == "name":
        for i in items:
            click.echo(f"{r.type_name}/{i['metadata']['name']}")
        return
    if not items:
        where = f" in {namespace} namespace" if ns else ""
        click.echo(f"No resources found{where}.", err=True)
        return
    headers, rows = r.printer(items, output == "wide", all_namespaces, time.time())
    click.echo(out.table(headers, rows), nl=False)


@cli.command(context_settings=CONTEXT)
@click.argument("kind")
@click.argument("name", required=False)
@namespace_options
@cluster_option
def describe(kind, name, namespace, all_namespaces, cluster):
    """Show an object in detail, with its recent events."""
    from nsk.api.objects import Key
    from nsk.apiserver import registry
    from nsk.cli.describe import describe as render
    if "/" in kind:
        kind, name = kind.split("/", 1)
    r = registry.lookup(kind)
    store = _store(cluster)
    ns = None if all_namespaces or not r.namespaced else namespace
    objs = store.list(r.kind, ns)
    if name:
        objs = [o for o in objs if o["metadata"]["name"] == name]
        if not objs:
            raise NotFound(f'{r.group_resource} "{name}" not found' +
                           (f' in namespace "{namespace}"' if r.namespaced else ""))
    texts = []
    for o in objs:
        meta = o["metadata"]
        events = store.events(Key(r.kind, meta.get("namespace", ""), meta["name"]))
        eps = store.get("Endpoints", meta.get("namespace", ""), meta["name"]) if r.kind == "Service" else None
        texts.append(render(o, events, time.time(), eps or ({} if r.kind == "Service" else None)))
    click.echo("\n\n".join(texts), nl=False)


@cli.command(context_settings=CONTEXT)
@click.option("-f", "--filename", "files", multiple=True, required=True,
              help="A manifest file, a directory of them, or - for stdin.")
@cluster_option
def apply(files, cluster):
    """Create or update the objects of FILE on the running cluster."""
    api = _api(cluster)
    for f in files:
        m = _load(f, api.cfg)
        if m.has_cluster_doc:
            click.echo(api.apply_cluster(m.cluster, f))
            _warn_proxy_fallback(m.cluster.proxy_mode)
        for line in api.apply(m.objects, f):
            click.echo(line)
        for mode in _configmap_modes(m.objects):
            _warn_proxy_fallback(mode)
    _warn_if_down(api)


def _warn_proxy_fallback(mode: str) -> None:
    """A proxy mode this kernel cannot run, asked for (the Cluster document, kube-proxy's
    ConfigMap): one line saying why iptables mode runs."""
    from nsk.proxy.provider import fallback
    if why := fallback(mode):
        click.echo(f"Warning: proxy mode {mode}: {why}", err=True)


def _configmap_modes(objects: list[dict]) -> list[str]:
    """The mode of kube-system/kube-proxy among `objects`, if it is there and valid (a config
    kube-proxy refuses is a Warning Event on the ConfigMap instead)."""
    from nsk.api.objects import Key, key
    from nsk.proxy import config as proxy_config
    out = []
    for o in objects:
        if key(o) == Key("ConfigMap", proxy_config.NAMESPACE, proxy_config.NAME):
            try:
                out.append(proxy_config.proxy_of(o)[0])
            except NskError:
                pass
    return out


@cli.command(context_settings=CONTEXT)
@click.argument("args", nargs=-1)
@click.option("-f", "--filename", "files", multiple=True, help="Delete the objects of this file (or directory).")
@click.option("--grace-period", type=int, default=-1, show_default=True,
              help="Seconds a Pod gets to end (SIGTERM, then SIGKILL); -1: its terminationGracePeriodSeconds.")
@click.option("--force", is_flag=True, help="Remove Pods from the API at once, not waiting for them to end.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Return once the objects are gone.")
@namespace_options
@cluster_option
def delete(args, files, grace_period, force, wait, namespace, all_namespaces, cluster):
    """Delete objects: `delete -f FILE`, `delete KIND NAME...` or `delete KIND/NAME`.

    A Pod is deleted gracefully, as on a real cluster: it is Terminating (and a terminating
    endpoint of its Services) until its containers have ended."""
    from nsk.api.objects import Key, key
    from nsk.apiserver import registry
    api = _api(cluster)
    keys: list[Key] = []
    for f in files:
        keys += [key(o) for o in _load(f, api.cfg).objects]
    words = list(args)
    while words:
        word = words.pop(0)
        if "/" in word:
            kind, name = word.split("/", 1)
            names = [name]
        else:
            kind, names = word, words
            words = []
            if not names:
                raise NskError(f"resource(s) were provided, but no name was specified for {kind}")
        r = registry.lookup(kind)
        keys += [Key(r.kind, namespace if r.namespaced else "", n) for n in names]
    if not keys:
        raise NskError("you must provide one or more resources by argument or filename (-f FILE, KIND NAME)")
    grace = None if grace_period < 0 else grace_period
    if force:
        grace = 0
        click.echo("Warning: Immediate deletion does not wait for confirmation that the running resource has been "
                   "terminated. The resource may continue to run on the cluster indefinitely.", err=True)
    elif grace == 0:
        grace = 1  # as kubectl: 0 without --force means the shortest graceful deletion
    uids = {k: (o["metadata"].get("uid"), o["spec"].get("terminationGracePeriodSeconds", 30))
            for k in keys if k.kind == "Pod" and (o := api.store.get("Pod", k.namespace, k.name))}
    res = api.delete(keys, grace=grace)
    from nsk.lifecycle import control_plane_pid
    alive, _ = control_plane_pid(api.store)
    if wait and uids and alive is not None:  # kubectl's --wait: until the kubelets have ended them
        deadline = time.monotonic() + max(g if grace is None else grace for _, g in uids.values()) + 10
        while time.monotonic() < deadline and any(
                (o := api.store.get("Pod", k.namespace, k.name)) and o["metadata"].get("uid") == uid
                for k, (uid, _) in uids.items()):
            time.sleep(0.05)
    for line in res.lines:
        click.echo(line)
    if res.lines:
        _warn_if_down(api)
    for m in res.missing:
        click.echo(f"Error from server (NotFound): {m}", err=True)
    if res.missing:
        sys.exit(1)


def _type_name(words: tuple[str, ...], verb: str) -> tuple[str, str]:
    """kubectl's two ways to name an object: TYPE/NAME or TYPE NAME."""
    if len(words) == 1 and "/" in words[0]:
        kind, _, name = words[0].partition("/")
        return kind, name
    if len(words) == 2 and "/" not in words[0]:
        return words
    raise NskError(f'cannot {verb} "{" ".join(words)}": give deployment/NAME or deployment NAME')


@cli.command(context_settings=CONTEXT)
@click.argument("target", nargs=-1, required=True)
@click.option("--replicas", type=int, required=True, help="The new number of Pods.")
@click.option("-n", "--namespace", default="default", show_default=True)
@cluster_option
def scale(target, replicas, namespace, cluster):
    """Set a Deployment's replicas: `scale deployment/NAME --replicas N` (or `deployment NAME`)."""
    from nsk.apiserver import registry
    kind, name = _type_name(target, "scale")
    target = "/".join(target)
    try:
        is_deployment = registry.lookup(kind).kind == "Deployment"
    except NskError:
        is_deployment = False
    if not is_deployment or not name:
        raise NskError(f'cannot scale "{target}": give deployment/NAME')
    api = _api(cluster)
    click.echo(api.scale(namespace, name, replicas))
    _warn_if_down(api)


@cli.command(context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.argument("target")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-c", "--container", help="The container whose environment to use (default: the first).")
@click.option("-i", "--stdin", is_flag=True, help="Accepted for kubectl habits; stdin always passes through.")
@click.option("-t", "--tty", is_flag=True, help="Accepted for kubectl habits.")
@cluster_option
def exec(target, command, namespace, container, stdin, tty, cluster):  # noqa: A001 - kubectl's verb
    """Run COMMAND in a Pod (POD), a node (node/NAME) or an external host (host/NAME).

    \b
    In a Pod it runs with the Pod's network namespace, hostname, environment,
    /etc/resolv.conf and /etc/hosts; stdin, stdout and the exit code pass through:
      nsk exec my-nginx-5b56ccd65f-7xk2p -- curl -s 10.244.2.2
      nsk exec node/node-1 -- iptables-save
      nsk exec host/client -- curl -s 172.18.0.2:30007
    """
    from nsk.exec import exec_target
    exec_target(_store(cluster), target, namespace, container, list(command))


@cli.command(context_settings=CONTEXT)
@click.argument("pod")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-c", "--container", help="The container (default: the first).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the log grows.")
@click.option("-p", "--previous", is_flag=True, help="The output of the container's previous run.")
@cluster_option
def logs(pod, namespace, container, follow, previous, cluster):
    """Print a container's output (its current run; --previous: the run before)."""
    from nsk.exec import log_file
    path = log_file(_store(cluster), pod, namespace, container, previous)
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif not follow:
                return
            else:
                time.sleep(0.2)
                if not os.path.exists(path):
                    return


@cli.command(context_settings=CONTEXT)
@click.argument("target", nargs=-1, required=True)
@click.option("--port", type=int, help="The Service port (default: the first containerPort).")
@click.option("--target-port", help="The Pods' port, a number or a name (default: --port).")
@click.option("--name", help="The Service's name (default: the Deployment's).")
@click.option("--type", "type_", default="ClusterIP", show_default=True,
              type=click.Choice(["ClusterIP", "NodePort", "LoadBalancer"]))
@click.option("--protocol", default="TCP", show_default=True, type=click.Choice(["TCP", "UDP", "SCTP"]))
@click.option("-n", "--namespace", default="default", show_default=True)
@cluster_option
def expose(target, port, target_port, name, type_, protocol, namespace, cluster):
    """Create a Service for a Deployment or Pod, as `kubectl expose` does (TYPE/NAME or TYPE NAME)."""
    kind, obj_name = _type_name(target, "expose")
    api = _api(cluster)
    click.echo(api.expose(kind, obj_name, namespace, port, target_port, name, type_, protocol))
    _warn_if_down(api)


@cli.command(context_settings=CONTEXT)
@click.option("--node", help="The node (default: every node).")
@click.option("-t", "--table", type=click.Choice(["nat", "filter"]), help="Only this table.")
@cluster_option
def rules(node, table, cluster):
    """The node's live proxy rules, as the running proxy mode shows them there."""
    from nsk.kernel.ops import Kernel
    from nsk.net.plan import plan
    from nsk.proxy.provider import provider_for
    api = _api(cluster)
    p = plan(api.cfg)
    mode, provider = provider_for(api.store.get_meta("proxy-mode") or api.cfg.proxy_mode)
    nodes = p.nodes
    if node:
        try:
            nodes = (p.node(node),)
        except KeyError:
            raise NskError(f'node "{node}" not found (nodes: {", ".join(n.name for n in p.nodes)})') from None
    kernel = Kernel(api.cfg.iptables_backend)
    for n in nodes:
        if len(nodes) > 1:
            how = f", iptables {kernel.iptables_backend}" if mode == "iptables" else ""
            click.echo(f"# node {n.name} ({n.netns}), {mode} mode{how}")
        click.echo(provider.show(kernel, n.netns, table), nl=False)


def main() -> None:
    cli(prog_name="nsk")
