"""The dashboard and read API of ``pulse serve`` (see :mod:`pulse.web.app`)."""
