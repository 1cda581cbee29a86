"""The only code that touches the kernel: namespaces, netlink, processes, iptables-restore."""
