"""Test helpers that ship with nsk: the iptables packet tracer."""
