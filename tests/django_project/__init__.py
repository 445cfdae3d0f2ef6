"""A small real Django project for ``tracewire.django.TracewireMiddleware``: served by gunicorn
(``wsgi.py``) and uvicorn (``asgi.py``) in child processes, and by Django's test clients in
process. ``TW_*`` environment variables choose the tracewire settings and the files the
child writes (spans, notes)."""
