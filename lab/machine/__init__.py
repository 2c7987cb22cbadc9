"""What lab keeps on this machine for every provider: its paths and caches, the lab network, Debian root filesystems."""
