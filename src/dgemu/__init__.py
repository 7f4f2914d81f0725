"""dgemu: an emulator of the Deepgram API (management, data plane, WebSocket), for offline runs and tests.

It imports nothing from keyledger: it is an independent oracle of Deepgram's published contract.
"""

__version__ = "0.1.0"
