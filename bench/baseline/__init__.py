"""The framework's own limit: a bare nameko stack measured beside Lastmile
(``bench/load.py``). ``services.py`` holds its three services."""
