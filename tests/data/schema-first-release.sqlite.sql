CREATE TABLE subscribers (
	id INTEGER NOT NULL, 
	email VARCHAR(320) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (email)
);
CREATE INDEX ix_subscribers_status ON subscribers (status);
CREATE TABLE issues (
	id INTEGER NOT NULL, 
	issue_date VARCHAR(10) NOT NULL, 
	subject TEXT NOT NULL, 
	preheader TEXT NOT NULL, 
	html TEXT NOT NULL, 
	text TEXT NOT NULL, 
	stories TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (issue_date)
);
CREATE TABLE issue_stories (
	issue_id INTEGER NOT NULL, 
	url VARCHAR(2000) NOT NULL, 
	PRIMARY KEY (issue_id, url), 
	FOREIGN KEY(issue_id) REFERENCES issues (id) ON DELETE CASCADE
);
CREATE TABLE deliveries (
	issue_id INTEGER NOT NULL, 
	subscriber_id INTEGER NOT NULL, 
	outcome VARCHAR(20) NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	attempts INTEGER NOT NULL, 
	reply TEXT NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (issue_id, subscriber_id), 
	CONSTRAINT one_delivery_per_issue UNIQUE (issue_id, subscriber_id), 
	FOREIGN KEY(issue_id) REFERENCES issues (id) ON DELETE CASCADE, 
	FOREIGN KEY(subscriber_id) REFERENCES subscribers (id) ON DELETE CASCADE
);
CREATE INDEX ix_deliveries_outcome ON deliveries (outcome);
