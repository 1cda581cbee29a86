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
    def __init__(self, text: str, local_ips: set[str]):
        self.tables = parse(text)
        self.local = local_ips
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
