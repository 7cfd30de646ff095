"""Turnout: real-time crowd counting at the edge, live attendance against registrations.

Packages: `edge` (camera -> counts -> MQTT), `server` (MQTT -> attendance, forecast, alerts, dashboard),
`models` (fetch and export of detection models), `turnout` (what they share: the MQTT contract, the CLI).
"""

__version__ = "0.1.0"
