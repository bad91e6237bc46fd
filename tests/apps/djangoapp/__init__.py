"""
A Django project for the end-to-end tests of C{--asgi}: Django's own ASGI
handler (L{asgi}, async and sync views, a streaming event stream, an upload;
no lifespan) and a Channels router (L{channelsasgi}, its WebSocket
consumers beside the same views).
"""
