CREATE TABLE public.deliveries (
    issue_id integer NOT NULL,
    subscriber_id integer NOT NULL,
    outcome character varying(20) NOT NULL,
    run_id character varying(64) NOT NULL,
    attempts integer NOT NULL,
    reply text NOT NULL,
    updated_at timestamp with time zone NOT NULL
);
CREATE TABLE public.issue_stories (
    issue_id integer NOT NULL,
    url character varying(2000) NOT NULL
);
CREATE TABLE public.issues (
    id integer NOT NULL,
    issue_date character varying(10) NOT NULL,
    subject text NOT NULL,
    preheader text NOT NULL,
    html text NOT NULL,
    text text NOT NULL,
    stories text NOT NULL,
    created_at timestamp with time zone NOT NULL
);
CREATE SEQUENCE public.issues_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.issues_id_seq OWNED BY public.issues.id;
CREATE TABLE public.subscribers (
    id integer NOT NULL,
    email character varying(320) NOT NULL,
    name character varying(200) NOT NULL,
    status character varying(20) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);
CREATE SEQUENCE public.subscribers_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.subscribers_id_seq OWNED BY public.subscribers.id;
ALTER TABLE ONLY public.issues ALTER COLUMN id SET DEFAULT nextval('public.issues_id_seq'::regclass);
ALTER TABLE ONLY public.subscribers ALTER COLUMN id SET DEFAULT nextval('public.subscribers_id_seq'::regclass);
ALTER TABLE ONLY public.issue_stories
    ADD CONSTRAINT issue_stories_pkey PRIMARY KEY (issue_id, url);
ALTER TABLE ONLY public.issues
    ADD CONSTRAINT issues_issue_date_key UNIQUE (issue_date);
ALTER TABLE ONLY public.issues
    ADD CONSTRAINT issues_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT one_delivery_per_issue PRIMARY KEY (issue_id, subscriber_id);
ALTER TABLE ONLY public.subscribers
    ADD CONSTRAINT subscribers_email_key UNIQUE (email);
ALTER TABLE ONLY public.subscribers
    ADD CONSTRAINT subscribers_pkey PRIMARY KEY (id);
CREATE INDEX ix_deliveries_outcome ON public.deliveries USING btree (outcome);
CREATE INDEX ix_subscribers_status ON public.subscribers USING btree (status);
ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT deliveries_issue_id_fkey FOREIGN KEY (issue_id) REFERENCES public.issues(id) ON DELETE CASCADE;
ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT deliveries_subscriber_id_fkey FOREIGN KEY (subscriber_id) REFERENCES public.subscribers(id) ON DELETE CASCADE;
ALTER TABLE ONLY public.issue_stories
    ADD CONSTRAINT issue_stories_issue_id_fkey FOREIGN KEY (issue_id) REFERENCES public.issues(id) ON DELETE CASCADE;
