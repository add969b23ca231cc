"""mailgw: e-mail gateway for Directive 15/CT-TTg document exchange."""

__version__ = "0.1.0"
