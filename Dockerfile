# Tessera: build the TypeScript, then run the compiled server on a slim Node image.
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src src
COPY migrations migrations
RUN node node_modules/typescript/bin/tsc -p tsconfig.json && npm prune --omit=dev

FROM node:22-bookworm-slim
WORKDIR /app
# A heap limit keeps V8 from letting garbage pile up to several times the live heap between full
# collections (README, "Memory"); raise it if /metrics shows nodejs_heap_used_bytes near it.
ENV NODE_ENV=production PORT=3000 NODE_OPTIONS=--max-old-space-size=512
COPY package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY views views
COPY public public
USER node
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD node -e "fetch('http://127.0.0.1:3000/readyz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
CMD ["node", "dist/src/main.js"]
