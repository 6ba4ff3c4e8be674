"""`lorarun ui`: the jobs in a browser (server.py), what it shows (views.py), what its buttons do (actions.py)."""
