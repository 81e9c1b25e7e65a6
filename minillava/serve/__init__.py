"""Talking to a trained assistant from outside Python.

* ``terminal``  ``minillava chat``: a conversation in the terminal, answers streamed as generated.
* ``protocol``  the OpenAI chat-completions protocol: a request checked field by field, the
                answer, its stream chunks and errors in OpenAI's shapes.
* ``images``    pictures in a request: data URLs, or files under a folder the server was told to read.
* ``batcher``   micro-batching: requests that arrive together are answered in one batched generation.
* ``server``    ``minillava serve``'s HTTP server (the standard library's): routes, API key,
                streaming, the web page.
* ``command``   the ``minillava serve`` command line.
* ``demo``      what the web demo (``static/``) needs besides the API: toy scenes to talk about.

Everything here stands on ``minillava.chat.Assistant`` (``ask``, ``stream``, ``replies``); the
assistant itself knows nothing of HTTP.
"""
