"""`memjax.plan`: what a config's programs cost on an accelerator, from ahead-of-time compilation (see __main__)."""
