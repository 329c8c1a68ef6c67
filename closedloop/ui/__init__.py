"""The browser views of a live session: the operator's dashboard and the participant's feedback.

``closedloop ui`` (and ``closedloop run --ui``, which starts it beside the loop) is a web server in
a process of its own. It reads the session's LSL streams (the input EEG, State, Markers and the
run's status stream, :mod:`closedloop.status`) and never touches the loop; it pushes what it reads
to the pages over WebSocket. Pages, scripts and styles are files of this package
(``closedloop/ui/static``), plotting is on canvas, nothing comes from a network.

- :mod:`closedloop.ui.feeds`: the LSL readers (threads) and the hub that fans out to pages;
- :mod:`closedloop.ui.analysis`: signal quality, spectrum, true phase at each trigger;
- :mod:`closedloop.ui.server`: the aiohttp application (routes, token, refusals);
- :mod:`closedloop.ui.control`: the control path from the views into the run (a socket pair
  with ``run --ui``, a Unix-domain socket with ``run --control PATH``);
- :mod:`closedloop.ui.launch`: what ``run`` does for ``--ui`` and ``--control``.
"""
