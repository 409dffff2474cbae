"""The QMP monitor (QEMU Machine Protocol) a toolstack such as libxl drives: `server` (socket,
framing, negotiation), `commands` (the command table), `info` (query-* shapes), `fdsets`
(add-fd). The commands act through devmodel.controller.Controller. Nothing is imported here,
so that the controller can use `fdsets` without pulling the server in."""
