from .app import cli

if __name__ == "__main__":  # guarded: the engine's child process (spawn) imports this module
    cli()
