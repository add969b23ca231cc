"""The document register (sổ đăng ký văn bản đến) and the archive of registered files.

blobs.py (content-addressed store), numbering.py (số đến per register and year), chain.py (hash
chain, pure), register.py (registering one message), export.py (CSV/HTML), stage.py (pipeline),
commands.py (CLI). See docs/register.md.
"""
