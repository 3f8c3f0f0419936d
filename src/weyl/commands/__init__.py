"""Every ``weyl`` subcommand: one module each, registered in :mod:`weyl.commands.registry`.

A command module holds only its argument parsing and the lines it prints; the work it does
lives in the library (``weyl.report``, ``weyl.data``, ``weyl.diagnostics``, ``weyl.train``).
"""
