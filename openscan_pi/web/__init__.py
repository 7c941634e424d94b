"""The scanner's web page: a process of its own (``python -m openscan_pi.web``), started and ended
by the daemon when ``web.enabled``.

It is a client of the daemon's Unix socket like any other: it ``subscribe``s for the live status
and calls the socket's methods for every action (scan, pause, continue, cancel, retry, preview,
``rig.move``, ``rig.light``), so there is no second way to move the rig. It reads job folders
(photos, the model) directly, read-only except for the thumbnails it caches in a job's
``thumbs/`` folder, and never outside ``daemon.data_dir/jobs/<id>/``. aiohttp and Pillow are
loaded here, never in the daemon (whose memory is a measured target).
"""
