"""The notifier's use cases: what happens to one notification (``delivery.py``), how
each channel sends it (``channels.py``, routed by ``CHANNELS``), over the ports of
``ports.py`` passed in as ``deps=`` (``context.py``). No framework, no library I/O."""
