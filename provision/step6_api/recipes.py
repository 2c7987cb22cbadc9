"""Step 6 recipes for api hosts: none of their own. An api host is a web host by another name: steps 1–3 give it the
site's release, venv, settings and app server (APP_SERVER_TIERS), step 5 its pgbouncer and the balancer's /api/
upstream, step 6 its cache settings; what makes it an api host is only the balancer sending it /api/ (the `api` link)."""
