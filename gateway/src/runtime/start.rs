//! Starting a built gateway: the S3 listener, the admin server, the background jobs.

use super::*;

/// Starts the gateway `config` describes, with the policies applied through the admin API
/// (the data directory's overlay) layered over it: dials nothing yet but probes every
/// provider once, then listens for S3 (and admin) requests and repairs in the background.
pub async fn start(file: &Config, overrides: &Overrides) -> anyhow::Result<Running> {
    recover_lost_metadata(file, overrides).await?;
    let mut layered = None;
    if let Some(g) = file.gateway() {
        let spec = overrides.apply(&g.spec)?;
        if spec.credentials.is_empty() {
            bail!(
                "StorageGateway spec.credentials is empty; add at least one access key \
                 (or set SUBLET_ACCESS_KEY and SUBLET_SECRET_KEY)"
            );
        }
        let paths = state_paths(&spec, overrides.data_dir.as_deref())?;
        layered = Some(crate::admin::policy::load_layered(file, &paths.data_dir)?);
    }
    let config = layered.as_ref().unwrap_or(file);
    let Built {
        gateway,
        metrics,
        health,
        spec,
        endpoints,
        paths,
        identity,
        node_key,
        clients,
        clouds,
        market_reporter,
        market_usage,
    } = build(config, overrides).await?;
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    // Journaling starts before anything may change metadata, and stops after the rest (the
    // requests drained at shutdown still journal their changes).
    let (journal_stop, journal_stopped) = tokio::sync::watch::channel(false);
    let probes: ProbeList = Arc::new(std::sync::RwLock::new(clients.clone()));
    if let Some(j) = gateway.journal() {
        j.follow(gateway.fleet(), &clients).await;
    }
    let journal_task = gateway.journal().map(|j| {
        let probes = Arc::clone(&probes);
        j.spawn(
            Arc::clone(gateway.fleet()),
            move || {
                probes
                    .read()
                    .map(|list| list.iter().map(|(node, _)| node.clone()).collect())
                    .unwrap_or_default()
            },
            Some(metrics.clone()),
            journal_stopped,
        )
    });
    let node_key_for_market = Arc::clone(&node_key);
    let dialer = Arc::new(Dialer {
        spec: spec.clone(),
        identity: node_key,
        metrics: metrics.clone(),
        health: Arc::clone(&health),
        meta: Arc::clone(gateway.metadata()),
        probes: Arc::clone(&probes),
        market_usage,
    });
    let spec = &spec;
    let keys = KeyRing::from_credentials(&spec.credentials)?;
    let tls = match &spec.tls {
        Some(t) => Some(tls_acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let meta = Arc::clone(gateway.metadata());
    let admin_token =
        crate::admin::policy::admin_token(overrides.admin_token.as_deref(), &paths.data_dir)?;

    let listen: SocketAddr = spec
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_LISTEN)
        .parse()
        .context("StorageGateway spec.listen")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the S3 address {listen} (spec.listen)"))?;
    let s3_addr = listener.local_addr()?;
    let mut tasks = vec![
        spawn_probes(
            spec.probe_interval(),
            Arc::clone(&probes),
            clouds.clone(),
            Arc::clone(&health),
            Arc::clone(&meta),
            stop.clone(),
        ),
        crate::upkeep::repair::spawn_loop(
            Arc::clone(&gateway),
            Some(metrics.clone()),
            crate::upkeep::repair::LOOP_INTERVAL,
            stop.clone(),
        ),
        crate::upkeep::audit::spawn_loop(Arc::clone(&gateway), Some(metrics.clone()), stop.clone()),
        crate::upkeep::drain::spawn_loop(
            Arc::clone(&gateway),
            Some(metrics.clone()),
            crate::upkeep::drain::DRAIN_INTERVAL,
            stop.clone(),
        ),
        crate::upkeep::scrub::spawn_loop(
            Arc::clone(&gateway),
            Some(metrics.clone()),
            scrub_policy(config),
            Some(paths.data_dir.join(crate::upkeep::scrub::POSITION_FILE)),
            stop.clone(),
        ),
        crate::upkeep::reencode::spawn_reencode(
            Arc::clone(&gateway),
            Some(metrics.clone()),
            crate::upkeep::reencode::REENCODE_INTERVAL,
            stop.clone(),
        ),
        crate::upkeep::lifecycle::spawn_lifecycle(
            Arc::clone(&gateway),
            crate::upkeep::lifecycle::LIFECYCLE_INTERVAL,
            stop.clone(),
        ),
        crate::upkeep::snapshot::spawn_snapshots(
            Arc::clone(&gateway),
            Arc::clone(&meta),
            clients.clone(),
            paths.data_dir.clone(),
            spec.snapshot_interval(),
            stop.clone(),
        ),
    ];
    tasks.push(crate::upkeep::users::spawn_refresh(Arc::clone(&gateway), stop.clone()).await);
    tasks.push(crate::upkeep::audit::hold_writes_in_flight(
        Arc::clone(&gateway),
        crate::node::WRITE_HOLD_RENEW,
        stop.clone(),
    ));
    tasks.push(crate::upkeep::audit::spawn_gc_loop(
        Arc::clone(&gateway),
        Some(metrics.clone()),
        crate::upkeep::audit::GC_INTERVAL,
        crate::upkeep::audit::GC_MIN_AGE,
        stop.clone(),
    ));
    if let Some(reporter) = market_reporter {
        let reporter = reporter.recontracting(
            Arc::clone(&node_key_for_market),
            Arc::clone(&dialer),
            Arc::clone(&gateway),
        );
        tasks.push(tokio::spawn(reporter.run(stop.clone())));
    }
    let admin_addr = match &spec.admin_listen {
        Some(admin) => {
            let addr: SocketAddr = admin.parse().context("StorageGateway spec.adminListen")?;
            let admin_listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the admin address {addr} (spec.adminListen)"))?;
            let bound = admin_listener.local_addr()?;
            let read_only = overrides.read_only_policies.then(|| {
                "the policies of this gateway are managed by the Kubernetes operator: change \
                 the StoragePlan and StorageSchedule resources with kubectl apply"
                    .to_owned()
            });
            let policy = Arc::new(
                crate::admin::policy::PolicyApi::new(
                    Arc::clone(&gateway),
                    file.clone(),
                    &paths.data_dir,
                    admin_token.clone(),
                    read_only,
                )?
                .with_dialer(Arc::clone(&dialer) as Arc<dyn crate::admin::policy::ProviderDialer>),
            );
            policy.copy_overlay().await;
            // Replicas on one database run the policies any of them applied.
            if gateway.metadata().shares_policies() {
                if let Err(e) = policy.sync_shared().await {
                    tracing::warn!(error = %format!("{e:#}"), "taking over shared policies failed");
                }
                tasks.push(Arc::clone(&policy).spawn_sync(POLICY_SYNC_INTERVAL, stop.clone()));
            }
            let mut stop = stop.clone();
            tasks.push(tokio::spawn(crate::admin::server::serve_admin(
                admin_listener,
                metrics.clone(),
                Arc::clone(&gateway),
                crate::admin::Standalone {
                    snapshots: Some(crate::upkeep::snapshot::SnapshotSource {
                        gateway: Arc::clone(&gateway),
                        meta: Arc::clone(&meta),
                        clients: clients.clone(),
                        work_dir: paths.data_dir.clone(),
                    }),
                },
                crate::admin::AdminToken::new(admin_token.clone()),
                policy.router(),
                async move {
                    let _ = stop.changed().await;
                },
            )));
            Some(bound)
        }
        None => None,
    };
    let service = MeteredService::new(
        crate::runtime::dev::service_with_keys(
            Arc::clone(&gateway),
            Some(keys.with_accounts(Arc::clone(gateway.accounts()))),
            spec.s3
                .as_ref()
                .and_then(|s3| crate::s3::host::VirtualHostDomains::new(&s3.domains)),
        ),
        metrics.clone(),
    )
    .with_journal(gateway.journal().cloned())
    .with_cors(Arc::clone(&gateway))
    .with_trusted_proxies(
        spec.s3
            .as_ref()
            .map_or(&[][..], |s3| s3.trusted_proxies.as_slice()),
    );
    let has_tls = tls.is_some();
    // Customers' keys (SSE-C) only over TLS, or where they never leave the machine.
    gateway.allow_customer_keys(has_tls || s3_addr.ip().is_loopback());
    let mut stop_s3 = stop;
    let limits = spec.client_limits.clone().unwrap_or_default();
    tasks.push(tokio::spawn(serve_s3(
        listener,
        service,
        tls,
        limits,
        async move {
            let _ = stop_s3.changed().await;
        },
    )));
    Ok(Running {
        gateway,
        metrics,
        health,
        s3_addr,
        admin_addr,
        providers: endpoints.iter().map(|e| e.site.node_id.clone()).collect(),
        paths,
        identity,
        tls: has_tls,
        admin_token,
        clients,
        probes,
        clouds,
        shutdown,
        tasks,
        journal_stop,
        journal_task,
    })
}
