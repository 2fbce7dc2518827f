import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself is imported
    sys.stderr.write("actaudit: interrupted; no output was written\n")
    sys.exit(130)

if __name__ == "__main__":
    main()
