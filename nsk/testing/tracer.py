"""A packet tracer over iptables-restore / iptables-save text (pure), after kube-proxy's
`tracePacket` in pkg/proxy/iptables/proxier_test.go.

It follows a packet through nat PREROUTING (or OUTPUT for the node's own traffic), the
filter table and nat POSTROUTING, and returns every outcome the rules allow: a
`-m statistic` or `-m recent --rcheck` rule may match or not, so both ways are followed.
Only the matches nsk's renderers use are understood; any other is an error, so a test
never passes by ignoring a rule.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

BUILTIN_TARGETS = {"ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "MASQUERADE", "MARK", "SNAT"}
MASQ = 0x4000


@dataclass(frozen=True)
class Rule:
    chain: str
    args: tuple[str, ...]
    target: str
    target_args: tuple[str, ...]

    def text(self) -> str:
        return " ".join(("-A", self.chain, *self.args, "-j", self.target, *self.target_args))


@dataclass
class Table:
    chains: dict[str, list[Rule]]


def parse(text: str) -> dict[str, Table]:
    return restore({}, text)


def restore(tables: dict[str, Table], text: str) -> dict[str, Table]:
    """`tables` after `iptables-restore --noflush` of `text`, as the kernel would have them:
    a declared chain is created or flushed, -X deletes it (a new dict; `tables` is kept)."""
    tables = {name: Table({c: list(rules) for c, rules in t.chains.items()}) for name, t in tables.items()}
    cur: Table | None = None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], Table({}))
        elif line.startswith(":"):
            assert cur is not None
            cur.chains[line[1:].split()[0]] = []
        elif line.startswith("-X "):
            assert cur is not None
            cur.chains.pop(line.split()[1], None)
        elif line.startswith("-D "):  # delete the first rule with this specification
            assert cur is not None
            tokens = shlex.split(line)
            j = tokens.index("-j") if "-j" in tokens else len(tokens)
            gone = Rule(tokens[1], tuple(tokens[2:j]), tokens[j + 1] if j < len(tokens) else "", tuple(tokens[j + 2:]))
            rules = cur.chains.get(tokens[1], [])
            if gone not in rules:
                raise ValueError(f"line {n}: {line}: no such rule")  # as iptables-restore
            rules.remove(gone)
        elif line.startswith(("-A ", "-I ")):
            assert cur is not None
            tokens = shlex.split(line)
            chain = tokens[1]
            j = tokens.index("-j") if "-j" in tokens else len(tokens)
            rule = Rule(chain, tuple(tokens[2:j]), tokens[j + 1] if j < len(tokens) else "",
                        tuple(tokens[j + 2:]))
            if rule.target and rule.target not in BUILTIN_TARGETS and rule.target not in cur.chains:
                raise ValueError(f"line {n}: {line}: chain {rule.target} does not exist")  # as iptables-restore
            rules = cur.chains.setdefault(chain, [])
            rules.insert(0, rule) if tokens[0] == "-I" else rules.append(rule)
        else:
            raise ValueError(f"cannot parse: {line}")
    return tables


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    dport: int
    proto: str = "tcp"


@dataclass(frozen=True)
class Outcome:
    dnat: str | None  # "ip:port" when the nat table rewrote the destination
    masquerade: bool
    verdict: str  # ACCEPT, DROP, REJECT


class Tracer:
    def __init__(self, text: str, local_ips: set[str], sets: dict[str, frozenset[str]] | None = None):
        """`sets`: the ipsets `-m set` rules match against (IPVS mode), name -> entries."""
        self.tables = parse(text)
        self.local = local_ips
        self.sets = sets or {}
        self._dnat = True  # during a walk of the filter table: whether nat DNATed the packet

    # ---- matching -------------------------------------------------------------------

    def _match(self, args: tuple[str, ...], pkt: Packet, mark: int) -> list[bool]:
        """Whether the rule's matches hold: [True], [False], or [True, False] when it is chance."""
        i, result, chance = 0, True, False
        while i < len(args):
            neg = args[i] == "!"
            if neg:
                i += 1
            a = args[i]
            if a in ("-s", "-d"):
                net = ipaddress.IPv4Network(args[i + 1], strict=False)
                ok = ipaddress.IPv4Address(pkt.src if a == "-s" else pkt.dst) in net
                i += 2
            elif a == "-p":
                ok = pkt.proto == args[i + 1]
                i += 2
            elif a == "--dport":
                ok = pkt.dport == int(args[i + 1])
                i += 2
            elif a == "-m":
                module = args[i + 1]
                i += 2
                if module in ("tcp", "udp", "sctp"):
                    continue
                if module == "comment":
                    i += 2
                    continue
                if module == "addrtype":
                    n = args[i] == "!"
                    flag, value = args[i + n], args[i + n + 1]
                    assert value == "LOCAL", value
                    ip = pkt.src if flag == "--src-type" else pkt.dst
                    ok = (ip in self.local) != n
                    i += 2 + n
                elif module == "mark":
                    n = args[i] == "!"
                    value, mask = (int(x, 16) for x in args[i + n + 1].split("/"))
                    ok = ((mark & mask) == value) != n
                    i += 2 + n
                elif module == "conntrack":
                    n = args[i] == "!"
                    states = args[i + n + 1].split(",")
                    # a tracer packet is a new connection, DNATed when nat gave it a destination
                    ok = ("NEW" in states or ("DNAT" in states and self._dnat)) != n
                    i += 2 + n
                elif module == "set":
                    n = args[i] == "!"
                    ok = self._in_set(args[i + n + 1], args[i + n + 2], pkt) != n
                    i += 3 + n
                elif module == "physdev":  # nsk's nodes route, never bridge, a Pod's packets
                    n = args[i] == "!"
                    assert args[i + n] == "--physdev-is-in", args
                    ok = n
                    i += 1 + n
                elif module == "statistic":
                    i += 4  # --mode random --probability P
                    chance = True
                    continue
                elif module == "recent":
                    # --name N --rcheck --seconds S --reap  or  --name N --set
                    rest = []
                    while i < len(args) and args[i].startswith("--") and args[i] not in ("--dport",):
                        rest.append(args[i])
                        i += 1
                        if rest[-1] in ("--name", "--seconds"):
                            rest.append(args[i])
                            i += 1
                    if "--rcheck" in rest:
                        chance = True
                    continue
                else:
                    raise ValueError(f"tracer does not know -m {module}")
            else:
                raise ValueError(f"tracer does not know {a} in {' '.join(args)}")
            if neg:
                ok = not ok
            result = result and ok
        if not result:
            return [False]
        return [True, False] if chance else [True]

    def _in_set(self, name: str, flags: str, pkt: Packet) -> bool:
        """Whether `pkt` is in ipset `name` (the entry formats of nsk/proxy/ipvs.py)."""
        from nsk.proxy.ipvs import SETS
        if name not in SETS:
            raise ValueError(f"tracer does not know ipset {name}")
        typ, entries = SETS[name][0], self.sets.get(name, frozenset())
        ip = {"src": pkt.src, "dst": pkt.dst}
        f = flags.split(",")
        if typ == "bitmap:port":
            return str(pkt.dport) in entries
        if typ == "hash:ip":
            return ip[f[0]] in entries
        key = f"{ip[f[0]]},{pkt.proto}:{pkt.dport}"
        if typ == "hash:ip,port":
            return key in entries
        if typ == "hash:ip,port,ip":
            return f"{key},{ip[f[2]]}" in entries
        # hash:ip,port,net
        return any(e.rsplit(",", 1)[0] == key and ipaddress.IPv4Address(ip[f[2]]) in
                   ipaddress.IPv4Network(e.rsplit(",", 1)[1]) for e in entries)

    # ---- walking --------------------------------------------------------------------

    def _walk(self, table: str, chain: str, pkt: Packet, mark: int, depth: int = 0):
        """Yield (final target, target args, packet, mark) for every way through `chain`."""
        if depth > 20:
            raise ValueError(f"jump loop at {chain}")
        yield from self._walk_from(table, chain, 0, pkt, mark, depth)

    def _walk_from(self, table, chain, start, pkt, mark, depth):
        rules = self.tables[table].chains.get(chain)
        if rules is None:
            raise ValueError(f"jump to missing chain {table}/{chain}")
        for idx in range(start, len(rules)):
            rule = rules[idx]
            outcomes = self._match(rule.args, pkt, mark)
            if outcomes == [False]:
                continue
            if False in outcomes:  # chance: also the way where this rule does not match
                yield from self._walk_from(table, chain, idx + 1, pkt, mark, depth)
            t = rule.target
            if t == "":
                continue
            if t == "MARK":
                op, value = rule.target_args[0], int(rule.target_args[1].split("/")[0], 16)
                mark = mark | value if op == "--or-mark" else (mark ^ value if op == "--xor-mark" else value)
                continue
            if t == "RETURN":
                yield ("RETURN", (), pkt, mark)
                return
            if t in BUILTIN_TARGETS:
                yield (t, rule.target_args, pkt, mark)
                return
            for res in self._walk(table, t, pkt, mark, depth + 1):
                if res[0] == "RETURN":
                    # continue after the jump with what the callee changed (the mark)
                    yield from self._walk_from(table, chain, idx + 1, res[2], res[3], depth)
                else:
                    yield res
            return
        yield ("RETURN", (), pkt, mark)

    def trace(self, pkt: Packet, from_node: bool = False) -> set[Outcome]:
        """Every outcome for a new connection `pkt`, arriving at the node or (from_node) sent by it."""
        results = set()
        first = "OUTPUT" if from_node else "PREROUTING"
        nat = self.tables.get("nat")
        ways = list(self._walk("nat", first, pkt, 0)) if nat and first in nat.chains else [("RETURN", (), pkt, 0)]
        for target, targs, p, mark in ways:
            dnat = None
            if target == "DNAT":
                dnat = targs[targs.index("--to-destination") + 1]
                ip, port = dnat.split(":")
                p = Packet(p.src, ip, int(port), p.proto)
            filt = self.tables.get("filter")
            self._dnat = dnat is not None
            hook = "OUTPUT" if from_node else ("INPUT" if p.dst in self.local else "FORWARD")
            verdict = "ACCEPT"
            if filt and hook in filt.chains:
                for ft, _, _, _ in self._walk("filter", hook, p, mark):
                    verdict = ft if ft in ("DROP", "REJECT") else "ACCEPT"
                    break
            masq = False
            if verdict == "ACCEPT" and hook != "INPUT" and nat and "POSTROUTING" in nat.chains:
                for pt, _, _, _ in self._walk("nat", "POSTROUTING", p, mark):
                    masq = pt == "MASQUERADE"
                    break
            results.add(Outcome(dnat, masq, verdict))
        return results


def check_consistency(text: str) -> list[str]:
    """Problems a restore would hit or leave: jumps to missing chains, endpoint chains
    that nothing reaches."""
    return check_tables(parse(text))


def check_tables(tables: dict[str, Table]) -> list[str]:
    """check_consistency() of tables as they are."""
    problems = []
    for name, table in tables.items():
        referenced = set()
        for chain, rules in table.chains.items():
            for r in rules:
                if r.target and r.target not in BUILTIN_TARGETS:
                    referenced.add(r.target)
                    if r.target not in table.chains:
                        problems.append(f"{name}: {r.text()}: jumps to missing chain {r.target}")
        for chain in table.chains:
            if chain.startswith(("KUBE-SEP-", "KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-")) \
                    and chain not in referenced:
                problems.append(f"{name}: chain {chain} is declared but never jumped to")
    return problems


class IpvsTracer:
    """A packet's ways through a node in IPVS mode (pure): kube-proxy's iptables rules, with
    its ipsets, and the virtual servers. The nat table only marks (no DNAT in this mode); a
    packet to an address of the node (kube-ipvs0's included) meets the filter table's INPUT
    (KUBE-IPVS-FILTER), then IPVS's LOCAL_IN hook, which sends it to each real server in
    turn (one outcome each) or, with none, has the kernel refuse it; POSTROUTING masquerades
    what was marked and hairpin traffic (KUBE-LOOP-BACK)."""

    def __init__(self, ruleset, local_ips: set[str]):
        from nsk.proxy import ipvs
        from nsk.proxy.iptables import missing_jumps
        self.state = ruleset.state
        self.local = set(local_ips) | set(ruleset.state.addrs)
        self.ipt = Tracer(missing_jumps("", ipvs.JUMPS, canary=False) + ruleset.iptables, self.local,
                          dict(ruleset.state.sets))

    def trace(self, pkt: Packet, from_node: bool = False) -> set[Outcome]:
        t = self.ipt
        _, _, _, mark = next(t._walk("nat", "OUTPUT" if from_node else "PREROUTING", pkt, 0))
        t._dnat = False
        if pkt.dst in self.local:  # (the node's own packets to itself meet INPUT too, through lo)
            for verdict, _, _, _ in t._walk("filter", "INPUT", pkt, mark):
                if verdict in ("DROP", "REJECT"):
                    return {Outcome(None, False, verdict)}
                break
        vs = self.state.services.get(f"{pkt.dst}:{pkt.dport}/{pkt.proto.upper()}")
        if vs is None or pkt.dst not in self.local:
            return t.trace(pkt, from_node)  # not a virtual server: the iptables ways alone
        real = [rs for rs, w in vs[1].items() if w > 0]
        if not real:
            return {Outcome(None, False, "REJECT")}  # the kernel's ICMP port unreachable
        out = set()
        for rs in real:
            ip, port = rs.rsplit(":", 1)
            p = Packet(pkt.src, ip, int(port), pkt.proto)
            masq = False
            for target, _, _, _ in t._walk("nat", "POSTROUTING", p, mark):
                masq = target == "MASQUERADE"
                break
            out.add(Outcome(rs, masq, "ACCEPT"))
        return out


class NftTracer:
    """A packet's ways through a node in nftables mode (pure): the `nft -f` text nsk writes
    (kube-proxy's table and nsk's ip nsk-ip-masq), its base chains taken by hook and
    priority. Only the expressions nsk's renderer writes are understood; any other is an
    error. `numgen random` and an affinity set's membership may go either way: every way is
    followed, as the iptables tracer follows `-m statistic` and `-m recent`."""

    HOOKS = {False: ("prerouting", "input", "forward", "postrouting"), True: ("output", "postrouting")}

    def __init__(self, text: str, local_ips: set[str]):
        self.local = local_ips
        self.chains: dict[tuple[str, str], list[list[str]]] = {}
        self.base: list[tuple[str, int, str, str, str]] = []  # (hook, priority, type, table, chain)
        self.maps: dict[tuple[str, str], dict[str, str]] = {}
        for line in text.splitlines():
            words = shlex.split(line)
            if len(words) < 4 or words[:1] not in (["add"], ["delete"], ["flush"]):
                continue
            verb, what, table = words[0], words[1], words[3]
            if verb == "flush":  # flush chain
                self.chains[(table, words[4])] = []
            elif verb == "delete" and what == "chain":
                del self.chains[(table, words[4])]
            elif verb == "delete" and what in ("set", "map"):
                del self.maps[(table, words[4])]
            elif verb == "delete" and what == "element":
                body = words[words.index("{") + 1:words.index("}")]
                del self.maps[(table, words[4])][" ".join(body)]
            elif what == "table":
                if verb == "delete":
                    self.chains = {k: v for k, v in self.chains.items() if k[0] != table}
                    self.base = [b for b in self.base if b[3] != table]
                    self.maps = {k: v for k, v in self.maps.items() if k[0] != table}
            elif what == "chain":
                self.chains.setdefault((table, words[4]), [])
                if "hook" in words:
                    h = words.index("hook")
                    self.base.append((words[h + 1], int(words[h + 3]), words[words.index("type") + 1], table, words[4]))
            elif what in ("set", "map"):
                self.maps.setdefault((table, words[4]), {})
            elif what == "rule":
                self.chains[(table, words[4])].append(words[5:])
            elif what == "element":
                body = words[words.index("{") + 1:words.index("}")]
                if "comment" in body:
                    c = body.index("comment")
                    body = body[:c] + body[c + 2:]
                key, _, verdict = " ".join(body).partition(" : ")
                self.maps[(table, words[4])][key.strip()] = verdict.strip()
        self.base.sort(key=lambda b: b[1])

    def _value(self, field: list[str], pkt: Packet) -> str:
        names = {"ip daddr": pkt.dst, "ip saddr": pkt.src, "meta l4proto": pkt.proto, "th dport": str(pkt.dport)}
        return " . ".join(names[" ".join(field[i:i + 2])] for i in range(0, len(field), 3))

    def _walk(self, table: str, chain: str, pkt: Packet, mark: int, depth: int = 0):
        """Yield (verdict, argument, mark) for every way through `chain`: verdicts accept,
        drop, reject, return, dnat (argument "ip:port"), masquerade."""
        if depth > 20:
            raise ValueError(f"jump loop at {chain}")
        yield from self._rules(table, chain, 0, pkt, mark, depth)

    def _rules(self, table, chain, start, pkt, mark, depth):
        rules = self.chains.get((table, chain))
        if rules is None:
            raise ValueError(f"jump to missing chain {table} {chain}")
        for idx in range(start, len(rules)):
            for way in self._rule(table, rules[idx], pkt, mark, depth):
                kind = way[0]
                if kind == "next":  # the rule did not end the chain: on to the next rule
                    yield from self._rules(table, chain, idx + 1, pkt, way[2], depth)
                else:
                    yield way
            return
        yield ("return", None, mark)

    def _rule(self, table, r: list[str], pkt: Packet, mark: int, depth: int):
        """The ways one rule goes: ("next", None, mark) when it falls through, else an end."""
        i = 0
        while i < len(r):
            w = r[i]
            if w == "comment":
                i += 2
            elif w in ("ip", "meta", "th") and r[i + 2:i + 3] != ["."]:  # one field: a match
                field = r[i:i + 2]
                i += 2
                neg = r[i] == "!="
                i += neg
                v = r[i]
                i += 1
                actual = self._value(field, pkt)
                if v.startswith("@"):
                    name = v[1:]
                    if name.startswith("affinity-"):  # a client seen before, or not: both ways
                        yield from self._rule(table, r[i:], pkt, mark, depth)
                        yield ("next", None, mark)
                        return
                    ok = actual in self.maps[(table, name)]
                elif v == "{":
                    j = r.index("}", i)
                    ok = any(_in(actual, x.strip(",")) for x in r[i:j])
                    i = j + 1
                else:
                    ok = _in(actual, v)
                if ok == neg:
                    yield ("next", None, mark)
                    return
            elif w in ("ip", "meta", "th"):  # a concatenation: ... vmap @map
                j = r.index("vmap", i)
                key = self._value(r[i:j], pkt)
                verdict = self.maps[(table, r[j + 1][1:])].get(key)
                if verdict is None:
                    yield ("next", None, mark)
                    return
                yield from self._verdict(table, verdict.split(), pkt, mark, depth)
                return
            elif w == "fib":  # fib saddr|daddr type [!=] local
                addr = pkt.src if r[i + 1] == "saddr" else pkt.dst
                neg = r[i + 3] == "!="
                i += 4 + neg
                if (addr in self.local) == neg:
                    yield ("next", None, mark)
                    return
            elif w == "ct":  # ct state new: every traced packet opens a connection
                assert r[i + 1:i + 3] == ["state", "new"], r
                i += 3
            elif w == "mark" and r[i + 1] == "and":  # mark and 0x4000 == 0
                if ((mark & int(r[i + 2], 16)) == int(r[i + 4], 16)) is False:
                    yield ("next", None, mark)
                    return
                i += 5
            elif w == "mark" and r[i + 1] == "set":  # mark set mark or|xor V
                v = int(r[i + 4], 16)
                mark = mark | v if r[i + 3] == "or" else mark ^ v
                i += 5
            elif w == "update":  # the affinity set remembers the client: no effect on this packet
                i = r.index("}", i) + 1
            elif w == "numgen":  # numgen random mod N vmap { 0 : goto A , 1 : goto B }
                body = " ".join(r[r.index("{", i) + 1:r.index("}", i)])
                for part in body.split(","):
                    yield from self._verdict(table, part.split(":", 1)[1].split(), pkt, mark, depth)
                return
            elif w == "dnat":  # dnat to ip:port
                yield ("dnat", r[i + 2], mark)
                return
            elif w == "masquerade":
                yield ("masquerade", None, mark)
                return
            elif w in ("jump", "goto", "return", "accept", "drop", "reject"):
                yield from self._verdict(table, r[i:i + 2] if w in ("jump", "goto") else [w], pkt, mark, depth)
                return
            else:
                raise ValueError(f"tracer does not know {w!r} in: {' '.join(r)}")
        yield ("next", None, mark)

    def _verdict(self, table, words: list[str], pkt: Packet, mark: int, depth: int):
        if words[0] == "jump":
            for way in self._walk(table, words[1], pkt, mark, depth + 1):
                yield ("next", None, way[2]) if way[0] == "return" else way
        elif words[0] == "goto":
            yield from self._walk(table, words[1], pkt, mark, depth + 1)
        else:
            yield (words[0], None, mark)

    def trace(self, pkt: Packet, from_node: bool = False) -> set[Outcome]:
        """Every outcome for a new connection `pkt`, arriving at the node or (from_node) sent by it."""
        out: set[Outcome] = set()

        def run(hooks: list[str], p: Packet, mark: int, dnat: str | None, masq: bool):
            if not hooks:
                out.add(Outcome(dnat, masq, "ACCEPT"))
                return
            hook, rest = hooks[0], hooks[1:]
            if hook in ("input", "forward"):  # routing chose one of the two
                if (hook == "input") != (p.dst in self.local):
                    run(rest, p, mark, dnat, masq)
                    return
                if hook == "input":
                    rest = []  # delivered here: no postrouting
            chains = [b for b in self.base if b[0] == hook]
            ways = [(p, mark, dnat, masq, False)]
            for _, _, typ, table, chain in chains:
                nxt = []
                for q, m, d, mq, done in ways:
                    if done:  # this chain type already rewrote the packet
                        nxt.append((q, m, d, mq, done))
                        continue
                    for verdict, arg, m2 in self._walk(table, chain, q, m):
                        if verdict in ("drop", "reject"):
                            out.add(Outcome(None, False, verdict.upper()))
                        elif verdict == "dnat":
                            ip, port = arg.rsplit(":", 1)
                            nxt.append((Packet(q.src, ip, int(port), q.proto), m2, arg, mq, False))
                        elif verdict == "masquerade":
                            nxt.append((q, m2, d, True, True))
                        else:
                            nxt.append((q, m2, d, mq, False))
                ways = nxt
            for q, m, d, mq, _ in ways:
                run(rest, q, m, d, mq)

        run(list(self.HOOKS[from_node]), pkt, 0, None, False)
        return out


def _in(actual: str, value: str) -> bool:
    """An address against an address or a prefix; anything else against itself."""
    if "/" in value:
        return ipaddress.IPv4Address(actual) in ipaddress.IPv4Network(value, strict=False)
    return actual == value
