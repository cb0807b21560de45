"""A local web page to restore photos: `python -m dwgn.app [--checkpoint PATH] [--port 7860]`.

service.py does the work (reading uploads, restoring, timing) without Gradio; page.py lays it out with
Gradio (an optional extra: `pip install -r requirements-app.txt`); __main__.py starts it on 127.0.0.1.
"""
