from albert_srl.pipeline.benchmark.cli import app

if __name__ == "__main__":
    app()
