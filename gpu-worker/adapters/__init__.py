"""Platform adapters: how jobs reach the pipeline (Runpod Serverless, a Cloudflare Queue pull)."""
