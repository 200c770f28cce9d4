"""File codecs: what operators write by hand, read into the core's values.

* :mod:`node.files.directory_import` - bulk directory files (JSON, CSV) <-> directory entities.
"""
