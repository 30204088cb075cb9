"""The fleet's TUF repository of signed model versions and device assignments.

`builder` is pure (Metadata objects in, Metadata objects out), `keys` reads and writes the key
files, `storage` keeps metadata and targets in the database and `service` runs each operation
as load -> build -> store in one transaction.
"""
