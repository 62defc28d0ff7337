"""etun: a Layer-2 site-to-site VPN joining two Ethernet LANs across any IP network."""

__version__ = "0.1.0"
