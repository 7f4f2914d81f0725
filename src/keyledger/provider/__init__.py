"""Provider: what keyledger needs from Deepgram (``port.py``) and the one implementation that speaks
Deepgram's wire format (``deepgram/``). Nothing outside this package knows Deepgram's JSON shapes."""
