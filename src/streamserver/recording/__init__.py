"""Recording: every stream to files that play at once and survive a crash.

:mod:`streamserver.recording.paths` says where a stream's files go (always
inside the recording directory, whatever the stream's name holds).
"""
