"""The Textual dashboard (`jepa watch`, `jepa train` on a terminal).

Nothing is imported here: the CLI imports the submodules it needs when a
command runs, so `jepa --help` stays fast.
"""
